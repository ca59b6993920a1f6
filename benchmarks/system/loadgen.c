/* A load generator for scale_out.py: CONNECTIONS clients that write 4-byte length-prefixed
 * frames as cheaply as the kernel allows, so that the servers, not the load, set the pace.
 *
 * Built by scale_out.py at run time (gcc -O2) into a temporary directory.
 *
 *   loadgen HOST PORT CONNECTIONS WARM COUNT BATCH SIZE
 *
 * Every connection gets WARM then COUNT frames of SIZE payload bytes, BATCH frames per write,
 * connection after connection (blocking sockets, TCP_NODELAY). Protocol on stdin/stdout, one
 * line each: it prints "warmed" after the warm-up and waits for a line ("go"); after the
 * measured frames it prints "T0 T1" (CLOCK_MONOTONIC seconds, the clock of Python's
 * time.perf_counter on Linux) and waits for a line ("exit") before closing, so that its CPU
 * time can be read while it still exists.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("write");
        }
        buf += n;
        len -= (size_t)n;
    }
}

/* n frames to every connection, BATCH at a time, connection after connection. */
static void round_robin(const int *fds, long conns, long n, const char *frames, long batch, long frame) {
    long full = n / batch, rest = n % batch;
    for (long i = 0; i < full; i++)
        for (long c = 0; c < conns; c++) write_all(fds[c], frames, (size_t)(batch * frame));
    if (rest)
        for (long c = 0; c < conns; c++) write_all(fds[c], frames, (size_t)(rest * frame));
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void wait_line(void) {
    char line[64];
    if (!fgets(line, sizeof line, stdin)) exit(0); /* the parent went away */
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: loadgen HOST PORT CONNECTIONS WARM COUNT BATCH SIZE\n");
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    long conns = atol(argv[3]), warm = atol(argv[4]), count = atol(argv[5]);
    long batch = atol(argv[6]), size = atol(argv[7]);
    long frame = 4 + size;

    char *frames = malloc((size_t)(batch * frame));
    if (!frames) die("malloc");
    for (long i = 0; i < batch; i++) {
        uint32_t len = htonl((uint32_t)size);
        memcpy(frames + i * frame, &len, 4);
        memset(frames + i * frame + 4, 'x', (size_t)size);
    }

    int *fds = malloc(sizeof(int) * (size_t)conns);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) die("inet_pton");
    for (long c = 0; c < conns; c++) {
        fds[c] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[c] < 0) die("socket");
        int one = 1;
        setsockopt(fds[c], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fds[c], (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
    }

    round_robin(fds, conns, warm, frames, batch, frame);
    printf("warmed\n");
    fflush(stdout);
    wait_line();
    double t0 = now();
    round_robin(fds, conns, count, frames, batch, frame);
    double t1 = now();
    printf("%.9f %.9f\n", t0, t1);
    fflush(stdout);
    wait_line();
    for (long c = 0; c < conns; c++) close(fds[c]);
    return 0;
}
