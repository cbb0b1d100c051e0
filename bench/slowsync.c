/* Benchmark only: emulates the slow flush of an SD card or eMMC on a machine whose disk
 * flushes in microseconds. LD_PRELOADed into both the single-commit ceiling loop and the
 * daemon, it sleeps COUPOND_BENCH_FLUSH_US microseconds before every fsync/fdatasync. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static void delay(void) {
    const char *v = getenv("COUPOND_BENCH_FLUSH_US");
    long us = v ? atol(v) : 0;
    if (us > 0) {
        struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
        nanosleep(&ts, NULL);
    }
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    delay();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    delay();
    return real(fd);
}
