/*
 * cfexp-launch: start an agent and measure it from outside, exactly.
 *
 *     cfexp-launch RESULT_FILE AGENT [ARGS...]
 *
 * Why a C program: the kernel's peak-RSS figure for a child (ru_maxrss)
 * starts from the high-water mark of the memory image it was forked from,
 * so a child forked from cfexp's own Python process (200+ MB with MLflow
 * loaded) "peaks" at 200+ MB whatever it does. Forked from this ~1 MB
 * program instead, the agent's ru_maxrss is its own.
 *
 * It asks the kernel for SIGTERM if its own parent (cfexp) dies, which it
 * forwards to the agent; it forks, the child asks to be killed if the
 * launcher dies, records the
 * CLOCK_MONOTONIC time just before exec, and execs the agent; the launcher
 * forwards SIGTERM/SIGINT, waits with wait4, and writes one JSON line to
 * RESULT_FILE: exit code or signal, t_exec_ns, maxrss_kb, utime_us, stime_us.
 * Its own exit status mirrors the agent's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile pid_t child = 0;

static void forward(int sig) {
    if (child > 0) kill(child, sig);
}

static long long monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: cfexp-launch RESULT_FILE AGENT [ARGS...]\n");
        return 125;
    }
    /* cfexp started us without a pre-exec hook (unsafe in a threaded parent):
       ask for its death signal here, and give up if it is already gone. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1) return 125;
    /* The child writes its exec time through this pipe (it cannot share memory). */
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) { perror("cfexp-launch: pipe"); return 125; }
    pid_t pid = fork();
    if (pid < 0) { perror("cfexp-launch: fork"); return 125; }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        long long t_exec = monotonic_ns();
        if (write(pipefd[1], &t_exec, sizeof t_exec) != sizeof t_exec) _exit(125);
        execvp(argv[2], &argv[2]); /* the pipe closes on exec (O_CLOEXEC) */
        fprintf(stderr, "cfexp-launch: cannot exec %s: %s\n", argv[2], strerror(errno));
        _exit(127);
    }
    child = pid;
    close(pipefd[1]);
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = forward;
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);

    long long t_exec = 0;
    if (read(pipefd[0], &t_exec, sizeof t_exec) != sizeof t_exec) t_exec = 0;
    close(pipefd[0]);

    int status = 0;
    struct rusage usage;
    while (wait4(pid, &status, 0, &usage) < 0) {
        if (errno != EINTR) { perror("cfexp-launch: wait4"); return 125; }
    }
    FILE *out = fopen(argv[1], "w");
    if (out == NULL) { perror("cfexp-launch: result file"); return 125; }
    fprintf(out,
            "{\"exit_code\": %d, \"signal\": %d, \"t_exec_ns\": %lld, \"maxrss_kb\": %ld, "
            "\"utime_us\": %lld, \"stime_us\": %lld}\n",
            WIFEXITED(status) ? WEXITSTATUS(status) : -1,
            WIFSIGNALED(status) ? WTERMSIG(status) : 0,
            t_exec,
            usage.ru_maxrss,
            (long long)usage.ru_utime.tv_sec * 1000000LL + usage.ru_utime.tv_usec,
            (long long)usage.ru_stime.tv_sec * 1000000LL + usage.ru_stime.tv_usec);
    fclose(out);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}
