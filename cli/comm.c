/* The communicator the tool hands the library (docs/distributed.md): Open MPI's when advtrain is
 * built with it and started by mpirun, otherwise none (one process). Only the tool links MPI;
 * the library sees an at_comm. Ranks other than 0 print nothing on stdout and write no files:
 * rank 0 reports the whole job's results. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, sleep */
#include "cli.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef ADVTRAIN_WITH_MPI
#include <mpi.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

/* The watchdog: a rank that waits in a sum longer than ADVTRAIN_MPI_TIMEOUT seconds (default 600)
 * takes another rank for hung (stopped, a dead file system) and ends the job: it exits, and
 * mpirun then ends every rank. It calls no MPI function (the main thread is inside one). */
static atomic_llong waiting_since; /* seconds, 0: not in a sum */
static long timeout_s = 600;

static long long now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec;
}

static double summing_s; /* this rank's time inside the sums (cli_comm_seconds) */

static void *watchdog(void *arg) {
    const int rank = *(const int *)arg;
    for (;;) {
        sleep(1);
        const long long since = atomic_load(&waiting_since);
        if (since && now_s() - since > timeout_s) {
            fprintf(stderr, "advtrain: rank %d waited %ld s for the other ranks in a sum: one of them is "
                            "hung or stopped; ending the job (ADVTRAIN_MPI_TIMEOUT sets the limit)\n",
                    rank, timeout_s);
            _exit(EXIT_RUN_FAILED);
        }
    }
    return NULL;
}

/* count values of `type` (`size` bytes each) summed over the ranks, in place, the watchdog on. */
static at_status mpi_sum(void *buf, size_t count, MPI_Datatype type, size_t size) {
    atomic_store(&waiting_since, now_s());
    const double start = MPI_Wtime();
    at_status s = AT_OK;
    /* MPI counts are ints: large buffers go in pieces. */
    for (size_t done = 0; done < count && s == AT_OK;) {
        const int piece = (int)(count - done < (size_t)INT_MAX / 2 ? count - done : (size_t)INT_MAX / 2);
        if (MPI_Allreduce(MPI_IN_PLACE, (char *)buf + done * size, piece, type, MPI_SUM, MPI_COMM_WORLD) != MPI_SUCCESS)
            s = AT_ERR_IO;
        done += (size_t)piece;
    }
    atomic_store(&waiting_since, 0);
    summing_s += MPI_Wtime() - start;
    return s;
}

static at_status mpi_allreduce_sum(void *user, double *buf, size_t count) {
    (void)user;
    return mpi_sum(buf, count, MPI_DOUBLE, sizeof(double));
}

static at_status mpi_allreduce_sum_float(void *user, float *buf, size_t count) {
    (void)user;
    return mpi_sum(buf, count, MPI_FLOAT, sizeof(float));
}

static bool start_watchdog(int *rank) {
    const char *t = getenv("ADVTRAIN_MPI_TIMEOUT");
    if (t && (timeout_s = atol(t)) <= 0) {
        fprintf(stderr, "advtrain: ADVTRAIN_MPI_TIMEOUT=%s: give a number of seconds > 0\n", t);
        return false;
    }
    pthread_t th;
    if (pthread_create(&th, NULL, watchdog, rank) != 0) return false;
    pthread_detach(th);
    return true;
}
#endif

static at_comm world = {0, 1, NULL, NULL, NULL};
static bool started;

/* Started by mpirun: Open MPI sets OMPI_COMM_WORLD_SIZE (and PMIx its rank). A plain start
 * never calls MPI_Init, which would look for a launcher. */
static bool under_mpirun(void) { return getenv("OMPI_COMM_WORLD_SIZE") != NULL; }

bool cli_comm_start(int *argc, char ***argv) {
#ifdef ADVTRAIN_WITH_MPI
    if (!under_mpirun()) return true;
    if (MPI_Init(argc, argv) != MPI_SUCCESS) {
        fprintf(stderr, "advtrain: MPI_Init failed\n");
        return false;
    }
    started = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &world.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world.size);
    world.allreduce_sum = mpi_allreduce_sum;
    world.allreduce_sum_float = mpi_allreduce_sum_float;
    if (world.size > 1 && !start_watchdog(&world.rank)) return false;
    if (world.rank > 0 && !freopen("/dev/null", "w", stdout)) {
        fprintf(stderr, "advtrain: rank %d: cannot silence stdout\n", world.rank);
        return false;
    }
    return true;
#else
    (void)argc, (void)argv;
    if (under_mpirun() && atoi(getenv("OMPI_COMM_WORLD_SIZE")) > 1) {
        fprintf(stderr, "advtrain: started by mpirun, but this advtrain was built without MPI "
                        "(install libopenmpi-dev and rebuild)\n");
        return false;
    }
    return true;
#endif
}

void cli_comm_end(int status) {
#ifdef ADVTRAIN_WITH_MPI
    if (!started) return;
    /* Stopped on request (SIGINT, SIGTERM: 130, 143): every rank stopped after the same step;
     * rank 0 may still be writing the checkpoint, so all wait for each other and end normally. */
    if (status == 130 || status == 143) cli_comm_barrier();
    /* A failing rank ends the whole job rather than leaving the others waiting in a sum. */
    else if (status != 0 && world.size > 1) MPI_Abort(MPI_COMM_WORLD, status);
    MPI_Finalize();
#else
    (void)status;
#endif
}

const at_comm *cli_comm(void) { return world.size > 1 ? &world : NULL; }

double cli_comm_seconds(void) {
#ifdef ADVTRAIN_WITH_MPI
    return summing_s;
#else
    return 0.0;
#endif
}

bool cli_is_root(void) { return world.rank == 0; }

bool cli_comm_barrier(void) {
    double one = 1.0; /* a sum every rank must join */
    return world.size == 1 || world.allreduce_sum(world.user, &one, 1) == AT_OK;
}
