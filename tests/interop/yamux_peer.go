// A yamux peer on HashiCorp's implementation (github.com/hashicorp/yamux), for
// tests/test_mux_interop.py: the two commands of `links mux`, so each side can face the other.
//
//	yamux_peer echo -port P [-open K -max-size B -seed S]
//	    Prints its port, then serves yamux on every TCP connection it accepts and echoes every
//	    frame on every stream the peer opens; when the peer ends a stream (FIN), ends its own side.
//	    With -open K it also opens one stream of its own on each connection and checks it as
//	    probe does, printing "opened: OK" or "opened: FAILED: why".
//	yamux_peer probe -addr H:P -streams N -messages K -seed S -max-size B [-timeout T -keepalive D -pongs M]
//	    Opens N streams at once over one TCP connection. On each it sends K frames of 1..B random
//	    bytes while it reads the echoes back, checks every byte and the order, then closes the
//	    stream (FIN). With -keepalive, the session PINGs every D and the probe waits until M of
//	    them were answered. Prints a summary; exit status 0 only if everything matched within T.
//
// A frame is a 4-byte big-endian length, then that many bytes.
package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

const maxFrame = 16 << 20

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: yamux_peer echo|probe [flags]")
		os.Exit(2)
	}
	flags := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	port := flags.Int("port", 0, "echo: port to listen on (0: any free one)")
	open := flags.Int("open", 0, "echo: frames to send on a stream of our own on each connection (0: none)")
	addr := flags.String("addr", "", "probe: the echo server, HOST:PORT")
	streams := flags.Int("streams", 10, "probe: streams opened at once")
	messages := flags.Int("messages", 100, "probe: frames sent on each stream")
	maxSize := flags.Int("max-size", 256<<10, "largest frame payload, bytes")
	seed := flags.Int64("seed", 1, "seed of the random sizes and bytes")
	timeout := flags.Duration("timeout", 20*time.Second, "time for the whole run")
	keepalive := flags.Duration("keepalive", 0, "probe: PING every this often (0: no keepalive)")
	pongs := flags.Int("pongs", 0, "probe: keepalive PINGs that must be answered")
	flags.Parse(os.Args[2:])
	deadline := time.Now().Add(*timeout)
	var err error
	switch os.Args[1] {
	case "echo":
		err = serve(*port, *open, *maxSize, *seed)
	case "probe":
		err = probe(*addr, *streams, *messages, *maxSize, *seed, deadline, *keepalive, *pongs)
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Println("FAILED:", err)
		os.Exit(1)
	}
}

// -- echo ---------------------------------------------------------------------------------

func serve(port, open, maxSize int, seed int64) error {
	listener, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return err
	}
	fmt.Println(listener.Addr().(*net.TCPAddr).Port)
	for {
		conn, err := listener.Accept()
		if err != nil {
			return err
		}
		session, err := yamux.Server(conn, nil)
		if err != nil {
			return err
		}
		go acceptStreams(session)
		if open > 0 {
			go func() {
				deadline := time.Now().Add(20 * time.Second)
				if err := checkStream(session, open, maxSize, seed, deadline); err != nil {
					fmt.Println("opened: FAILED:", err)
				} else {
					fmt.Printf("opened: OK: %d frames echoed\n", open)
				}
			}()
		}
	}
}

func acceptStreams(session *yamux.Session) {
	for {
		stream, err := session.AcceptStream()
		if err != nil {
			return // the session ended
		}
		go echo(stream)
	}
}

// echo sends every frame back, and ends its side once the peer ended its own.
func echo(stream *yamux.Stream) {
	defer stream.Close()
	for {
		frame, err := readFrame(stream)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				fmt.Fprintf(os.Stderr, "echo stream %d: %v\n", stream.StreamID(), err)
			}
			return
		}
		if err := writeFrame(stream, frame); err != nil {
			fmt.Fprintf(os.Stderr, "echo stream %d: %v\n", stream.StreamID(), err)
			return
		}
	}
}

// -- probe --------------------------------------------------------------------------------

func probe(addr string, streams, messages, maxSize int, seed int64, deadline time.Time, keepalive time.Duration, pongs int) error {
	conn, err := net.DialTimeout("tcp", addr, time.Until(deadline))
	if err != nil {
		return err
	}
	config := yamux.DefaultConfig()
	answered := make(chan struct{}, 1024)
	if keepalive > 0 {
		config.EnableKeepAlive = true
		config.KeepAliveInterval = keepalive
		config.ConnectionWriteTimeout = 4 * keepalive // a PING unanswered this long ends the session
		conn = &pongCounter{Conn: conn, pongs: answered}
	} else {
		config.EnableKeepAlive = false
	}
	session, err := yamux.Client(conn, config)
	if err != nil {
		return err
	}
	defer session.Close()
	started := time.Now()
	failures := make([]error, streams)
	var wg sync.WaitGroup
	for i := 0; i < streams; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			failures[i] = checkStream(session, messages, maxSize, seed*1_000_003+int64(i), deadline)
		}(i)
	}
	wg.Wait()
	failed := 0
	for i, err := range failures {
		if err != nil {
			failed++
			fmt.Printf("stream %d: %v\n", i+1, err)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d streams did not echo back what was sent", failed, streams)
	}
	fmt.Printf("OK: %d streams, %d frames echoed byte for byte and in order (%.1f s)\n",
		streams, streams*messages, time.Since(started).Seconds())
	if keepalive > 0 {
		for got := 0; got < pongs; got++ {
			select {
			case <-answered:
			case <-session.CloseChan():
				return fmt.Errorf("the session ended after %d answered PINGs", got)
			case <-time.After(time.Until(deadline)):
				return fmt.Errorf("timed out: %d of %d PINGs answered", got, pongs)
			}
		}
		if session.IsClosed() {
			return errors.New("the session ended")
		}
		fmt.Printf("keepalive: %d PINGs answered, one every %v; the session is up after %.2f s\n",
			pongs, keepalive, time.Since(started).Seconds())
	}
	return nil
}

// checkStream opens a stream, sends `messages` random frames while it reads the echoes back
// and checks them, then closes the stream (FIN). Not FIN first: in this version of yamux, a
// stream closed here reads as ended (EOF) whatever the peer still sends.
func checkStream(session *yamux.Session, messages, maxSize int, seed int64, deadline time.Time) error {
	stream, err := session.OpenStream()
	if err != nil {
		return err
	}
	defer stream.Close()
	stream.SetDeadline(deadline)
	sent := make(chan error, 1)
	go func() {
		frames := newFrames(seed, maxSize)
		for i := 0; i < messages; i++ {
			if err := writeFrame(stream, frames.next()); err != nil {
				sent <- fmt.Errorf("sending frame %d: %w", i+1, err)
				return
			}
		}
		sent <- nil
	}()
	frames := newFrames(seed, maxSize)
	for i := 0; i < messages; i++ {
		got, err := readFrame(stream)
		if err != nil {
			return fmt.Errorf("echo %d of %d: %w", i+1, messages, err)
		}
		if want := frames.next(); !bytes.Equal(got, want) {
			return fmt.Errorf("echo %d: %d bytes, not frame %d (%d bytes)", i+1, len(got), i+1, len(want))
		}
	}
	if err := <-sent; err != nil {
		return err
	}
	return stream.Close()
}

// frames makes one stream's frames from its seed: the same ones again for the same seed.
type frames struct {
	rng     *rand.Rand
	maxSize int
}

func newFrames(seed int64, maxSize int) *frames {
	return &frames{rand.New(rand.NewSource(seed)), maxSize}
}

func (f *frames) next() []byte {
	frame := make([]byte, 1+f.rng.Intn(f.maxSize))
	f.rng.Read(frame)
	return frame
}

func readFrame(r io.Reader) ([]byte, error) {
	var header [4]byte
	if _, err := io.ReadFull(r, header[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(header[:])
	if n > maxFrame {
		return nil, fmt.Errorf("a frame of %d bytes (at most %d)", n, maxFrame)
	}
	frame := make([]byte, n)
	if _, err := io.ReadFull(r, frame); err != nil {
		return nil, fmt.Errorf("inside a frame: %w", err)
	}
	return frame, nil
}

func writeFrame(w io.Writer, frame []byte) error {
	out := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(frame)), uint32(len(frame)))
	_, err := w.Write(append(out, frame...))
	return err
}

// pongCounter watches the yamux frames the peer sends and reports each answer to a PING
// (a PING frame with the ACK flag): keepalive has no other trace of being answered.
type pongCounter struct {
	net.Conn
	pongs  chan<- struct{}
	header []byte
	skip   int // payload bytes of a DATA frame still to pass
}

func (c *pongCounter) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	for b := p[:n]; len(b) > 0; {
		if c.skip > 0 {
			k := c.skip
			if k > len(b) {
				k = len(b)
			}
			b, c.skip = b[k:], c.skip-k
			continue
		}
		k := 12 - len(c.header)
		if k > len(b) {
			k = len(b)
		}
		c.header, b = append(c.header, b[:k]...), b[k:]
		if len(c.header) < 12 {
			break
		}
		kind, flags, length := c.header[1], binary.BigEndian.Uint16(c.header[2:]), binary.BigEndian.Uint32(c.header[8:])
		if kind == 0 { // DATA
			c.skip = int(length)
		} else if kind == 2 && flags&0x2 != 0 { // PING, ACK
			select {
			case c.pongs <- struct{}{}:
			default:
			}
		}
		c.header = c.header[:0]
	}
	return n, err
}
