/* The C floor: the same four workloads with blocking sockets and one thread per connection.
 *
 * Built by vs_peers.py at run time (gcc -O2 -pthread) into a temporary directory, and
 * skipped when that fails. It speaks the harness's control protocol (see links/bench/_child.py):
 * JSON lines on stdout, "stop" / "exit" on stdin.
 *
 *   floor server W SIZE WARM COUNT CLIENTS
 *   floor client W SIZE WARM COUNT CLIENTS PORT
 *
 * The server parses frames in place (length prefix, then the body's bytes counted as they
 * pass) without copying payloads out: it is the floor, what the kernel and loopback allow.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int W;
static long SIZE, WARM, COUNT, CLIENTS;
static long total, warm_total;
static long count, nbytes;
static int marks;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void tally(long n, long nb) {
    pthread_mutex_lock(&mu);
    count += n;
    nbytes += nb;
    if (marks == 0 && count >= warm_total) {
        printf("{\"mark\": \"warm\", \"t\": %.9f, \"count\": %ld}\n", now(), count);
        marks = 1;
    }
    if (marks == 1 && count >= total) {
        printf("{\"mark\": \"done\", \"t\": %.9f, \"count\": %ld}\n", now(), count);
        marks = 2;
    }
    fflush(stdout);
    pthread_mutex_unlock(&mu);
}

static int read_exact(int fd, char *buf, long n) {
    long got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r <= 0) {
            if (r < 0 && errno == EINTR) continue;
            return -1;
        }
        got += r;
    }
    return 0;
}

static int write_all(int fd, const char *buf, long n) {
    long put = 0;
    while (put < n) {
        ssize_t r = write(fd, buf + put, n - put);
        if (r <= 0) {
            if (r < 0 && errno == EINTR) continue;
            return -1;
        }
        put += r;
    }
    return 0;
}

static void nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void *serve_conn(void *arg) {
    int fd = (int)(intptr_t)arg;
    if (W == 2) {
        char *frame = malloc(4 + SIZE);
        for (;;) {
            if (read_exact(fd, frame, 4) < 0) break;
            uint32_t len;
            memcpy(&len, frame, 4);
            len = ntohl(len);
            if (len > (uint32_t)SIZE || read_exact(fd, frame + 4, len) < 0) break;
            if (write_all(fd, frame, 4 + len) < 0) break;
            tally(1, len);
        }
        free(frame);
    } else {
        enum { CAP = 1 << 18 };
        char *buf = malloc(CAP);
        unsigned char hdr[4];
        int hgot = 0;
        long left = 0, cur = 0;
        for (;;) {
            ssize_t r = read(fd, buf, CAP);
            if (r <= 0) {
                if (r < 0 && errno == EINTR) continue;
                break;
            }
            long frames = 0, fb = 0, p = 0;
            while (p < r) {
                if (hgot < 4) {
                    hdr[hgot++] = (unsigned char)buf[p++];
                    if (hgot == 4) {
                        left = cur = ((long)hdr[0] << 24) | ((long)hdr[1] << 16) | ((long)hdr[2] << 8) | hdr[3];
                        if (left == 0) { frames++; hgot = 0; }
                    }
                } else {
                    long take = r - p < left ? r - p : left;
                    p += take;
                    left -= take;
                    if (left == 0) { frames++; fb += cur; hgot = 0; }
                }
            }
            if (frames) tally(frames, fb);
        }
        free(buf);
    }
    close(fd);
    return NULL;
}

static void *accept_loop(void *arg) {
    int lfd = (int)(intptr_t)arg;
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR) continue;
            return NULL;
        }
        nodelay(fd);
        pthread_t t;
        pthread_create(&t, NULL, serve_conn, (void *)(intptr_t)fd);
        pthread_detach(t);
    }
}

static int server(void) {
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 1024) < 0) return 1;
    socklen_t al = sizeof a;
    getsockname(lfd, (struct sockaddr *)&a, &al);
    pthread_t t;
    pthread_create(&t, NULL, accept_loop, (void *)(intptr_t)lfd);
    pthread_mutex_lock(&mu);
    printf("{\"port\": %d}\n", ntohs(a.sin_port));
    fflush(stdout);
    pthread_mutex_unlock(&mu);
    char line[64];
    while (fgets(line, sizeof line, stdin) && strncmp(line, "stop", 4) != 0) {}
    pthread_mutex_lock(&mu);
    printf("{\"final\": {\"count\": %ld, \"bytes\": %ld}}\n", count, nbytes);
    fflush(stdout);
    _exit(0);
}

static int PORT;

static int dial(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(PORT);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) { close(fd); return -1; }
    nodelay(fd);
    return fd;
}

static char *make_frame(void) {
    char *frame = malloc(4 + SIZE);
    uint32_t len = htonl((uint32_t)SIZE);
    memcpy(frame, &len, 4);
    for (long i = 0; i < SIZE; i++) frame[4 + i] = (char)(i & 255);
    return frame;
}

static long sent_total;
static pthread_barrier_t warmed, go; /* CLIENTS sender threads + the main thread */

/* Warm-up, then wait at the barriers for the harness's "go", then the measured messages. A
 * thread whose connection failed still meets both barriers, so nobody waits for it forever. */
static void *one_way(void *arg) {
    (void)arg;
    int fd = dial();
    char *frame = make_frame();
    long n = 0;
    for (; fd >= 0 && n < WARM; n++)
        if (write_all(fd, frame, 4 + SIZE) < 0) break;
    int ok = fd >= 0 && n == WARM;
    pthread_barrier_wait(&warmed);
    pthread_barrier_wait(&go);
    for (; ok && n < WARM + COUNT; n++)
        if (write_all(fd, frame, 4 + SIZE) < 0) break;
    if (fd >= 0) close(fd);
    free(frame);
    __atomic_add_fetch(&sent_total, n, __ATOMIC_SEQ_CST);
    return NULL;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int client(void) {
    if (W == 2) {
        int fd = dial();
        char *frame = make_frame(), *back = malloc(4 + SIZE);
        double *rtts = malloc(sizeof(double) * (COUNT > 0 ? COUNT : 1));
        long n = 0, received = 0;
        for (; fd >= 0 && n < WARM + COUNT; n++) {
            double t0 = now();
            if (write_all(fd, frame, 4 + SIZE) < 0 || read_exact(fd, back, 4) < 0) break;
            uint32_t len;
            memcpy(&len, back, 4);
            len = ntohl(len);
            if (len > (uint32_t)SIZE || read_exact(fd, back + 4, len) < 0) break;
            double t1 = now();
            received += len == (uint32_t)SIZE;
            if (n >= WARM) rtts[n - WARM] = (t1 - t0) * 1e6;
        }
        long m = n > WARM ? n - WARM : 0;
        double p50 = 0, p99 = 0;
        if (m) {
            qsort(rtts, m, sizeof(double), cmp);
            p50 = rtts[(long)(0.50 * m) < m - 1 ? (long)(0.50 * m) : m - 1];
            p99 = rtts[(long)(0.99 * m) < m - 1 ? (long)(0.99 * m) : m - 1];
        }
        if (fd >= 0) close(fd);
        printf("{\"result\": {\"sent\": %ld, \"bytes\": %ld, \"received\": %ld, \"p50\": %.3f, \"p99\": %.3f}}\n",
               n, n * SIZE, received, p50, p99);
    } else {
        pthread_t *ts = malloc(sizeof(pthread_t) * CLIENTS);
        pthread_barrier_init(&warmed, NULL, CLIENTS + 1);
        pthread_barrier_init(&go, NULL, CLIENTS + 1);
        for (long i = 0; i < CLIENTS; i++) pthread_create(&ts[i], NULL, one_way, NULL);
        pthread_barrier_wait(&warmed);
        printf("{\"warmed\": true}\n");
        fflush(stdout);
        char word[64];
        while (fgets(word, sizeof word, stdin) && strncmp(word, "go", 2) != 0) {}
        double t0 = now();
        pthread_barrier_wait(&go);
        for (long i = 0; i < CLIENTS; i++) pthread_join(ts[i], NULL);
        printf("{\"result\": {\"sent\": %ld, \"bytes\": %ld, \"received\": 0, \"t0\": %.9f}}\n",
               sent_total, sent_total * SIZE, t0);
    }
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin) && strncmp(line, "exit", 4) != 0) {}
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: floor server|client W SIZE WARM COUNT CLIENTS [PORT]\n");
        return 2;
    }
    W = atoi(argv[2]);
    SIZE = atol(argv[3]);
    WARM = atol(argv[4]);
    COUNT = atol(argv[5]);
    CLIENTS = atol(argv[6]);
    total = CLIENTS * (WARM + COUNT);
    warm_total = CLIENTS * WARM;
    if (strcmp(argv[1], "server") == 0) return server();
    if (argc < 8) return 2;
    PORT = atoi(argv[7]);
    return client();
}
