// A msgpack-rpc peer in Go, for tests/test_rpc_interop.py: a client and a server that speak
// the msgpack-rpc specification over TCP, built on github.com/ugorji/go/codec (msgpack, and
// its msgpack-rpc codec for the standard library's net/rpc), so `links rpc call` and
// `links rpc serve` each face an implementation that is not links.
//
//	msgpack_rpc_peer serve -port P
//	    Prints its port, then serves every TCP connection it accepts: echo(x) -> x,
//	    add(a, b) -> a + b (integers), fail(message) -> an error reply carrying message; any
//	    other method -> an error reply "no such method: NAME". Notifications are read and
//	    ignored. Requests are read with the codec's msgpack decoder as whole messages and
//	    answered in the order they came.
//	msgpack_rpc_peer call -addr H:P -method M [-concurrent N] [ARG_JSON ...]
//	    Calls M with the arguments (each a JSON value) through net/rpc and the codec's
//	    MsgpackSpecRpc client codec, and prints the result as JSON on stdout; an error reply
//	    goes to stderr as "error: ..." with exit status 1. With -concurrent N it makes N calls at
//	    once (all in flight on the one connection) and checks every reply is the one for its
//	    call: for add, the arguments of call i are (i, ARG); for echo, its argument is "ARG-i".
//	    It prints "concurrent: OK N" or "concurrent: FAILED why" (exit status 1).
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/rpc"
	"os"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/ugorji/go/codec"
)

func handle() *codec.MsgpackHandle {
	h := &codec.MsgpackHandle{}
	h.WriteExt = true    // the current spec: str 8 and bin types
	h.RawToString = true // msgpack strings decode as Go strings
	h.MapType = reflect.TypeOf(map[string]interface{}(nil))
	return h
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: msgpack_rpc_peer serve|call ...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2:])
	case "call":
		os.Exit(call(os.Args[2:]))
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}

// -- serve ---------------------------------------------------------------------------------

func serve(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	port := fs.Int("port", 0, "port to listen on")
	fs.Parse(args)
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go serveConn(conn)
	}
}

func serveConn(conn net.Conn) {
	defer conn.Close()
	h := handle()
	dec := codec.NewDecoder(bufio.NewReader(conn), h)
	out := bufio.NewWriter(conn)
	enc := codec.NewEncoder(out, h)
	for {
		var msg []interface{}
		if err := dec.Decode(&msg); err != nil {
			if !errors.Is(err, io.EOF) {
				fmt.Fprintln(os.Stderr, "serve: read:", err)
			}
			return
		}
		kind, ok := asInt(msg[0])
		if !ok || (kind == 0 && len(msg) != 4) || (kind == 2 && len(msg) != 3) {
			fmt.Fprintln(os.Stderr, "serve: not a msgpack-rpc request:", msg)
			return
		}
		if kind == 2 {
			continue // a notification: nothing to answer
		}
		if kind != 0 {
			fmt.Fprintln(os.Stderr, "serve: unexpected message type", kind)
			return
		}
		method, _ := msg[2].(string)
		params, _ := msg[3].([]interface{})
		result, failure := dispatch(method, params)
		var reply []interface{}
		if failure != "" {
			reply = []interface{}{1, msg[1], failure, nil}
		} else {
			reply = []interface{}{1, msg[1], nil, result}
		}
		if err := enc.Encode(reply); err != nil {
			return
		}
		if err := out.Flush(); err != nil {
			return
		}
	}
}

func dispatch(method string, params []interface{}) (interface{}, string) {
	switch method {
	case "echo":
		if len(params) != 1 {
			return nil, "echo takes 1 argument"
		}
		return params[0], ""
	case "add":
		if len(params) != 2 {
			return nil, "add takes 2 arguments"
		}
		a, okA := asInt(params[0])
		b, okB := asInt(params[1])
		if !okA || !okB {
			return nil, "add takes integers"
		}
		return a + b, ""
	case "fail":
		if len(params) != 1 {
			return nil, "fail takes 1 argument"
		}
		return nil, fmt.Sprint(params[0])
	}
	return nil, "no such method: " + method
}

func asInt(v interface{}) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case uint64:
		return int64(n), true
	case int:
		return int64(n), true
	case uint8:
		return int64(n), true
	}
	return 0, false
}

// -- call ----------------------------------------------------------------------------------

func call(args []string) int {
	fs := flag.NewFlagSet("call", flag.ExitOnError)
	addr := fs.String("addr", "", "the server, HOST:PORT")
	method := fs.String("method", "", "the method")
	concurrent := fs.Int("concurrent", 0, "calls at once (see the comment at the top)")
	timeout := fs.Duration("timeout", 20*time.Second, "the whole run")
	fs.Parse(args)
	conn, err := net.DialTimeout("tcp", *addr, *timeout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 1
	}
	conn.SetDeadline(time.Now().Add(*timeout))
	client := rpc.NewClientWithCodec(codec.MsgpackSpecRpc.ClientCodec(conn, handle()))
	defer client.Close()
	params := codec.MsgpackSpecRpcMultiArgs{}
	for _, text := range fs.Args() {
		dec := json.NewDecoder(strings.NewReader(text))
		dec.UseNumber() // 3 is sent as an integer, 3.5 as a float, as msgpack tells them apart
		var v interface{}
		if err := dec.Decode(&v); err != nil {
			fmt.Fprintln(os.Stderr, "error: not JSON:", text)
			return 2
		}
		params = append(params, numbers(v))
	}
	if *concurrent > 0 {
		return callMany(client, *method, params, *concurrent)
	}
	var reply interface{}
	if err := client.Call(*method, params, &reply); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 1
	}
	text, err := json.Marshal(jsonable(reply))
	if err != nil {
		fmt.Fprintln(os.Stderr, "error: the result is not JSON:", err)
		return 1
	}
	fmt.Println(string(text))
	return 0
}

func callMany(client *rpc.Client, method string, params codec.MsgpackSpecRpcMultiArgs, n int) int {
	if len(params) != 1 {
		fmt.Println("concurrent: FAILED one argument is needed")
		return 1
	}
	var wg sync.WaitGroup
	problems := make(chan string, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			var reply interface{}
			var want interface{}
			var args codec.MsgpackSpecRpcMultiArgs
			if method == "add" {
				b, _ := asInt(params[0])
				args, want = codec.MsgpackSpecRpcMultiArgs{i, b}, int64(i)+b
			} else {
				s := fmt.Sprintf("%v-%d", params[0], i)
				args, want = codec.MsgpackSpecRpcMultiArgs{s}, s
			}
			if err := client.Call(method, args, &reply); err != nil {
				problems <- fmt.Sprintf("call %d: %v", i, err)
				return
			}
			got, ok := asInt(reply)
			if (ok && got != want) || (!ok && fmt.Sprint(reply) != fmt.Sprint(want)) {
				problems <- fmt.Sprintf("call %d: got %v, want %v", i, reply, want)
			}
		}(i)
	}
	wg.Wait()
	close(problems)
	for p := range problems {
		fmt.Println("concurrent: FAILED", p)
		return 1
	}
	fmt.Println("concurrent: OK", n)
	return 0
}

// numbers turns the json.Numbers of a decoded JSON value into int64 or float64.
func numbers(v interface{}) interface{} {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case map[string]interface{}:
		for k, val := range x {
			x[k] = numbers(val)
		}
	case []interface{}:
		for i, val := range x {
			x[i] = numbers(val)
		}
	}
	return v
}

// jsonable turns what the codec decoded (map[interface{}]interface{} nested in lists, []byte)
// into what encoding/json takes.
func jsonable(v interface{}) interface{} {
	switch x := v.(type) {
	case map[interface{}]interface{}:
		m := map[string]interface{}{}
		for k, val := range x {
			m[fmt.Sprint(k)] = jsonable(val)
		}
		return m
	case map[string]interface{}:
		for k, val := range x {
			x[k] = jsonable(val)
		}
		return x
	case []interface{}:
		for i, val := range x {
			x[i] = jsonable(val)
		}
		return x
	case []byte:
		return string(x)
	}
	return v
}
