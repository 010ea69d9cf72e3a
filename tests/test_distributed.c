/* Attacks shared among ranks (at_attack_config.comm, src/attacks/shard.c) against one process:
 * 2 and 3 ranks, simulated by threads of this process with an in-process communicator (a
 * barrier and a shared sum), each rank with its own copy of the network. Every rank returns the
 * whole result: the same robust and clean counts, ensemble members and sanity measurements as
 * one process, and the adversarial examples and predictions of every row (bit for bit with
 * advtrain's GEMM kernel; within rounding with OpenBLAS, whose rows depend on the product's
 * height). Bad communicators are refused. */
#define _POSIX_C_SOURCE 200809L /* pthread barriers */
#include "advtrain.h"
#include "testutil.h"

#include <pthread.h>

enum { N = 90, MAX_RANKS = 3 };

/* The in-process communicator: ranks add their buffers into one sum between barriers. */
typedef struct shared {
    pthread_barrier_t barrier;
    pthread_mutex_t lock;
    double *sum;
    size_t cap;
} shared;

typedef struct rank_user {
    shared *sh;
    int rank;
} rank_user;

static at_status fake_allreduce(void *user, double *buf, size_t count) {
    rank_user *u = user;
    shared *sh = u->sh;
    pthread_barrier_wait(&sh->barrier);
    if (u->rank == 0) {
        free(sh->sum);
        sh->sum = calloc(count, sizeof(double));
        sh->cap = count;
    }
    pthread_barrier_wait(&sh->barrier);
    pthread_mutex_lock(&sh->lock);
    for (size_t i = 0; i < count; i++) sh->sum[i] += buf[i]; /* integers and one nonzero per slot: exact */
    pthread_mutex_unlock(&sh->lock);
    pthread_barrier_wait(&sh->barrier);
    memcpy(buf, sh->sum, sizeof(double) * count);
    pthread_barrier_wait(&sh->barrier);
    return AT_OK;
}

typedef struct job {
    at_net *net;
    const float *x;
    const int32_t *y;
    const char *attack;
    at_comm comm;
    rank_user user;
    float *adv;
    int32_t pred[N];
    at_attack_result res;
    at_status status;
} job;

static void *run_rank(void *arg) {
    job *j = arg;
    at_attack_config c;
    at_attack_from_name(j->attack, &c);
    c.eps = 0.01f;
    at_attack_set_budget(&c, 10, 200);
    c.seed = 5;
    c.restarts = 2;
    c.comm = j->comm.size > 1 ? &j->comm : NULL;
    j->status = at_attack_run(j->net, &c, j->x, j->y, N, j->adv, j->pred, &j->res);
    return NULL;
}

static at_net *model(void) {
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, "conv:4:3:2:1,relu,flatten,linear:10", 1, 8, 8));
    if (net) at_net_init(net, 3);
    return net;
}

static bool same_counts(const at_attack_result *a, const at_attack_result *b) {
    bool same = a->samples == b->samples && a->clean_correct == b->clean_correct && a->robust == b->robust &&
                a->forwards == b->forwards && a->backwards == b->backwards && a->zero_grad == b->zero_grad &&
                a->outside_ball == b->outside_ball && a->nmembers == b->nmembers;
    for (int k = 0; same && k < a->nmembers; k++)
        same = a->members[k].robust == b->members[k].robust && strcmp(a->members[k].name, b->members[k].name) == 0;
    return same;
}

static void check_ranks(const char *attack, int ranks, const float *x, const int32_t *y, const job *alone) {
    shared sh = {.sum = NULL};
    pthread_barrier_init(&sh.barrier, NULL, (unsigned)ranks);
    pthread_mutex_init(&sh.lock, NULL);
    job jobs[MAX_RANKS];
    pthread_t th[MAX_RANKS];
    for (int r = 0; r < ranks; r++) {
        jobs[r] = (job){.net = model(), .x = x, .y = y, .attack = attack};
        jobs[r].adv = calloc((size_t)N * 64, sizeof(float));
        jobs[r].user = (rank_user){&sh, r};
        jobs[r].comm = (at_comm){r, ranks, fake_allreduce, &jobs[r].user};
    }
    for (int r = 0; r < ranks; r++) pthread_create(&th[r], NULL, run_rank, &jobs[r]);
    for (int r = 0; r < ranks; r++) pthread_join(th[r], NULL);
    const bool own = strncmp(at_gemm_backend_name(), "advtrain", 8) == 0;
    for (int r = 0; r < ranks; r++) {
        CHECK_OK(jobs[r].status);
        CHECK_MSG(same_counts(&jobs[r].res, &alone->res), "%s, rank %d of %d: robust %d vs %d alone", attack, r, ranks,
                  jobs[r].res.robust, alone->res.robust);
        size_t differ = 0;
        for (size_t q = 0; q < (size_t)N * 64; q++) differ += own ? jobs[r].adv[q] != alone->adv[q] : fabsf(jobs[r].adv[q] - alone->adv[q]) > 1e-4f;
        CHECK_MSG(differ * 100 <= (own ? 0 : (size_t)N * 64) && memcmp(jobs[r].pred, alone->pred, sizeof alone->pred) == 0,
                  "%s, rank %d of %d: %zu example values and the predictions differ from one process", attack, r, ranks, differ);
        at_net_free(jobs[r].net);
        free(jobs[r].adv);
    }
    pthread_barrier_destroy(&sh.barrier);
    pthread_mutex_destroy(&sh.lock);
    free(sh.sum);
}

static void check_bad_comm(at_net *net, const float *x, const int32_t *y) {
    at_attack_config c;
    at_attack_from_name("pgd", &c);
    c.eps = 0.1f;
    at_attack_result r;
    at_comm bad = {2, 2, fake_allreduce, NULL}; /* rank outside 0..size-1 */
    c.comm = &bad;
    CHECK(at_attack_run(net, &c, x, y, N, NULL, NULL, &r) == AT_ERR_ARG);
    bad = (at_comm){0, 2, NULL, NULL};
    CHECK(at_attack_run(net, &c, x, y, N, NULL, NULL, &r) == AT_ERR_ARG);
    at_comm one = {0, 1, NULL, NULL}; /* a single rank needs no sum */
    c.comm = &one;
    CHECK_OK(at_attack_run(net, &c, x, y, N, NULL, NULL, &r));
}

int main(void) {
    at_set_threads(1);
    float *x = malloc(sizeof(float) * N * 64);
    int32_t y[N];
    uint64_t h = 12345;
    for (int i = 0; i < N * 64; i++) {
        h = h * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)(h >> 40) / 16777216.0f;
    }
    /* Labels: the network's own predictions for two samples in three (correct, so attacked), a
     * wrong class for the third. */
    at_net *net = model();
    const float *z = NULL;
    CHECK_OK(at_net_predict(net, x, N, &z));
    for (int i = 0; i < N; i++) y[i] = z ? (at_argmax(z + (size_t)i * 10, 10) + (i % 3 == 0)) % 10 : 0;
    at_net_free(net);
    const char *attacks[] = {"pgd", "auto", "square"};
    for (int a = 0; a < 3; a++) {
        job alone = {.net = model(), .x = x, .y = y, .attack = attacks[a]};
        alone.adv = calloc((size_t)N * 64, sizeof(float));
        run_rank(&alone);
        CHECK_OK(alone.status);
        for (int ranks = 2; ranks <= MAX_RANKS; ranks++) check_ranks(attacks[a], ranks, x, y, &alone);
        printf("  %-6s one process: %d robust of %d (%d correct); compared with 2 and 3 ranks\n", attacks[a], alone.res.robust, N, alone.res.clean_correct);
        if (a == 0) check_bad_comm(alone.net, x, y);
        at_net_free(alone.net);
        free(alone.adv);
    }
    free(x);
    return tu_finish("test_distributed");
}
