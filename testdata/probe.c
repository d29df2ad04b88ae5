/* A WASI test guest: each sub-command probes one thing the host grants or denies.
 *
 *   probe args...          print argv, one per line
 *   probe env NAME         print $NAME, or "(unset)"
 *   probe cat PATH         print a file, or "error: ..." and exit 1
 *   probe write PATH TEXT  write a file, or "error: ..." and exit 1
 *   probe stdin            copy stdin to stdout
 *   probe alloc            allocate 1 MiB blocks until refused; print how many; exit 3
 *   probe spin             loop forever
 *   probe sleep N          sleep N seconds: a guest waiting in a host call
 *   probe exit N           exit with status N
 *   probe trap             execute an unreachable instruction
 *
 * Built by the tests with clang --target=wasm32-wasi --sysroot=/usr (Debian's wasi-libc).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Keeps allocations reachable, so the compiler cannot elide them. */
static void *volatile kept;

static int fail(const char *what, const char *path) {
    printf("error: %s %s: %s\n", what, path, strerror(errno));
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: probe COMMAND [ARGS...]\n");
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "args") == 0) {
        for (int i = 0; i < argc; i++) printf("%s\n", argv[i]);
    } else if (strcmp(cmd, "env") == 0 && argc == 3) {
        const char *v = getenv(argv[2]);
        printf("%s\n", v ? v : "(unset)");
    } else if (strcmp(cmd, "cat") == 0 && argc == 3) {
        FILE *f = fopen(argv[2], "r");
        if (!f) return fail("open", argv[2]);
        char buf[4096];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, stdout);
        fclose(f);
    } else if (strcmp(cmd, "write") == 0 && argc == 4) {
        FILE *f = fopen(argv[2], "w");
        if (!f) return fail("open", argv[2]);
        if (fputs(argv[3], f) < 0 || fclose(f) != 0) return fail("write", argv[2]);
    } else if (strcmp(cmd, "stdin") == 0) {
        int c;
        while ((c = getchar()) != EOF) putchar(c);
    } else if (strcmp(cmd, "alloc") == 0) {
        size_t mib = 0;
        while (1) {
            char *p = malloc(1 << 20);
            if (!p) break;
            memset(p, 1, 1 << 20);
            *(void **)p = kept;
            kept = p;
            mib++;
        }
        printf("allocated %zu MiB before malloc failed\n", mib);
        return 3;
    } else if (strcmp(cmd, "spin") == 0) {
        volatile unsigned long n = 0;
        for (;;) n++;
    } else if (strcmp(cmd, "hold") == 0 && argc == 3) {
        /* Allocates and touches N MiB, then sleeps: a guest whose memory can be measured. */
        for (int i = 0; i < atoi(argv[2]); i++) {
            char *p = malloc(1 << 20);
            if (!p) return fail("malloc", argv[2]);
            memset(p, 1, 1 << 20);
            *(void **)p = kept;
            kept = p;
        }
        sleep(3600);
        return 0;
    } else if (strcmp(cmd, "sleep") == 0 && argc == 3) {
        sleep((unsigned)atoi(argv[2]));
        return 0;
    } else if (strcmp(cmd, "exit") == 0 && argc == 3) {
        exit(atoi(argv[2]));
    } else if (strcmp(cmd, "trap") == 0) {
        __builtin_trap();
    } else {
        fprintf(stderr, "probe: unknown command %s\n", cmd);
        return 2;
    }
    return 0;
}
