/* Attacks shared among ranks (at_attack_config.comm, src/attacks/shard.c) against one process:
 * 2 and 3 ranks, simulated by threads of this process with an in-process communicator (a
 * barrier and a shared sum), each rank with its own copy of the network. Every rank returns the
 * whole result: the same robust and clean counts, ensemble members and sanity measurements as
 * one process, and the adversarial examples and predictions of every row (bit for bit with
 * advtrain's GEMM kernel; within rounding with OpenBLAS, whose rows depend on the product's
 * height). Bad communicators are refused.
 * Data-parallel training (at_train_config.comm, src/data_parallel.c): 2 and 3 ranks train a
 * BatchNorm + dropout CNN with L1, L2, crop and flip augmentation and mixup (and FGSM, PGD and
 * TRADES adversarial training, whose random starts follow each sample's index; PGD with QAT, whose
 * activation ranges follow the whole batch's extremes) on Fashion-MNIST;
 * every rank ends with the same weights bit for bit, equal to one process's within float
 * summation order, with the same test accuracy; only rank 0 writes the checkpoint; what is not
 * shared (Free-AT's per-slot perturbation) is refused. */
#define _DEFAULT_SOURCE /* pthread barriers, mkdtemp */
#include "advtrain.h"
#include "testutil.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

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

/* Adds each rank's count values (doubles, or floats) into one sum between barriers. */
static at_status fake_sum(void *user, void *buf, size_t count, bool floats) {
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
    for (size_t i = 0; i < count; i++) { /* doubles: integers and one nonzero per slot, exact */
        if (floats) ((float *)sh->sum)[i] += ((const float *)buf)[i];
        else sh->sum[i] += ((const double *)buf)[i];
    }
    pthread_mutex_unlock(&sh->lock);
    pthread_barrier_wait(&sh->barrier);
    memcpy(buf, sh->sum, (floats ? sizeof(float) : sizeof(double)) * count);
    pthread_barrier_wait(&sh->barrier);
    return AT_OK;
}

static at_status fake_allreduce(void *user, double *buf, size_t count) { return fake_sum(user, buf, count, false); }

/* The float sum (training's gradients). */
static at_status fake_allreduce_float(void *user, float *buf, size_t count) { return fake_sum(user, buf, count, true); }

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

/* ------------------------------------------------------------ data-parallel training */

static at_data data;
static const char *TRAIN_SPEC = "conv:8:3:2:1,bn,relu,conv:16:3:2:1,bn,relu,flatten,dropout:0.2,linear:10";

enum { EPOCHS = 2 };

typedef struct train_job {
    at_net *net;
    at_train_config cfg;
    at_comm comm;
    rank_user user;
    at_status status;
    at_eval_result test;
    uint64_t hash[EPOCHS]; /* the weights after each epoch */
} train_job;

/* FNV-1a of the parameters' bits after each epoch. */
static bool hash_epoch(void *user, const at_epoch_stats *st) {
    train_job *j = user;
    const unsigned char *p = (const unsigned char *)at_net_params(j->net);
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < sizeof(float) * at_net_num_params(j->net); i++) h = (h ^ p[i]) * 1099511628211ull;
    if (st->epoch >= 1 && st->epoch <= EPOCHS) j->hash[st->epoch - 1] = h;
    return true;
}

static void *train_rank(void *arg) {
    train_job *j = arg;
    const at_train_callbacks cb = {.user = j, .on_epoch = hash_epoch};
    j->status = at_train(j->net, &data.train, NULL, &data.test, &j->cfg, &cb);
    if (j->status == AT_OK) j->status = at_evaluate(j->net, &data.test, 256, &j->test);
    return NULL;
}

static bool with_qat; /* quantization-aware training in train_config */

static at_train_config train_config(at_adv_method adv) {
    const bool adversarial = adv != AT_ADV_NONE;
    at_train_config c = at_train_defaults();
    c.epochs = EPOCHS;
    c.batch = 64;
    c.seed = 9;
    c.optim.lr = 0.05f;
    c.optim.momentum = 0.9f;
    c.l1 = 1e-5f;
    c.l2 = 1e-4f;
    c.augment.flip = true;
    c.augment.crop_pad = 2;
    c.mixup_alpha = adversarial ? 0.0f : 0.3f;
    if (adversarial) c.adv = at_adv_train_defaults(adv, 0.1f);
    c.adv.steps = 3; /* pgd and trades: enough steps to move, few to wait for */
    c.qat.enabled = with_qat;
    return c;
}

static at_net *train_net(void) {
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, TRAIN_SPEC, 1, 28, 28));
    if (net) at_net_init(net, 21);
    return net;
}

/* Largest |a - b| over the parameters, relative to the largest |a|. */
static double param_gap(at_net *a, at_net *b) {
    const float *p = at_net_params(a), *q = at_net_params(b);
    double gap = 0, scale = 1e-30;
    for (size_t i = 0; i < at_net_num_params(a); i++) {
        gap = fmax(gap, fabs((double)p[i] - q[i]));
        scale = fmax(scale, fabs((double)p[i]));
    }
    return gap / scale;
}

static void check_training(at_adv_method adv, int ranks, const char *dir) {
    char what[64];
    snprintf(what, sizeof what, "%s training%s", adv == AT_ADV_NONE ? "plain" : at_adv_method_name(adv),
             with_qat ? " with QAT" : "");
    train_job alone = {.net = train_net(), .cfg = train_config(adv)};
    train_rank(&alone);
    CHECK_OK(alone.status);
    /* How far one process moves with the summation order alone (1 thread instead of 2): TRADES
     * steps along the signs of KL gradients that start near zero, which rounding flips (with
     * OpenBLAS, whose rows depend on the product's height, it moves by ~1e-3 of the weights). */
    train_job other = {.net = train_net(), .cfg = train_config(adv)};
    const int threads = at_get_threads();
    at_set_threads(1);
    train_rank(&other);
    at_set_threads(threads);
    CHECK_OK(other.status);
    const double own_gap = param_gap(alone.net, other.net);
    const double own_acc_gap = fabs((double)alone.test.accuracy - other.test.accuracy);
    at_net_free(other.net);
    shared sh = {.sum = NULL};
    pthread_barrier_init(&sh.barrier, NULL, (unsigned)ranks);
    pthread_mutex_init(&sh.lock, NULL);
    train_job jobs[MAX_RANKS];
    pthread_t th[MAX_RANKS];
    for (int r = 0; r < ranks; r++) {
        jobs[r] = (train_job){.net = train_net(), .cfg = train_config(adv)};
        if (r > 0) at_net_init(jobs[r].net, 100 + r); /* rank 0's initial weights must reach every rank */
        jobs[r].user = (rank_user){&sh, r};
        /* 2 ranks sum the gradients as floats, 3 through the double sum (no float sum given) */
        jobs[r].comm = (at_comm){r, ranks, fake_allreduce, &jobs[r].user, ranks == 2 ? fake_allreduce_float : NULL};
        jobs[r].cfg.comm = &jobs[r].comm;
        jobs[r].cfg.checkpoint.dir = dir;
    }
    for (int r = 0; r < ranks; r++) pthread_create(&th[r], NULL, train_rank, &jobs[r]);
    for (int r = 0; r < ranks; r++) pthread_join(th[r], NULL);
    for (int r = 0; r < ranks; r++) {
        CHECK_OK(jobs[r].status);
        CHECK_MSG(param_gap(jobs[0].net, jobs[r].net) == 0, "%s, %d ranks: rank %d's weights differ from rank 0's", what,
                  ranks, r);
        for (int e = 0; e < EPOCHS; e++)
            CHECK_MSG(jobs[r].hash[e] == jobs[0].hash[e] && jobs[0].hash[e] != 0,
                      "%s, %d ranks: after epoch %d rank %d's weights hash differently", what, ranks, e + 1, r);
    }
    const double gap = param_gap(alone.net, jobs[0].net);
    const double acc_gap = fabs((double)alone.test.accuracy - jobs[0].test.accuracy);
    /* Within float tolerance: 1e-3 of the weights and 0.1 points, or what the summation order
     * alone moves one process (4 times its weights' gap, twice its accuracy's) if more; a run
     * whose own weights move by more than 1% that way is chaotic (TRADES), and its accuracy may
     * then move by a point, as with another seed. */
    const double acc_tol = fmax(fmax(0.001, 2 * own_acc_gap), own_gap > 0.01 ? 0.01 : 0.0);
    CHECK_MSG(gap < fmax(1e-3, 4 * own_gap) && acc_gap <= acc_tol + 1e-9,
              "%s, %d ranks: weights %.3g (relative) and test accuracy %.4f vs %.4f apart (one process at 1 "
              "thread: %.3g, %.4f)",
              what, ranks, gap, (double)jobs[0].test.accuracy, (double)alone.test.accuracy, own_gap, own_acc_gap);
    printf("  %s on %d ranks: weights within %.2g of one process (which moves by %.2g at 1 thread), test accuracy "
           "%.2f%% (one process %.2f%%)\n",
           what, ranks, gap, own_gap, 100.0 * jobs[0].test.accuracy, 100.0 * alone.test.accuracy);
    for (int r = 0; r < ranks; r++) at_net_free(jobs[r].net);
    at_net_free(alone.net);
    pthread_barrier_destroy(&sh.barrier);
    pthread_mutex_destroy(&sh.lock);
    free(sh.sum);
}

static void check_refused(void) {
    at_net *net = train_net();
    at_train_config c = train_config(AT_ADV_FREE);
    at_comm two = {0, 2, fake_allreduce, NULL};
    c.comm = &two;
    CHECK(at_train(net, &data.train, NULL, NULL, &c, NULL) == AT_ERR_ARG && strstr(at_error_message(), "free"));
    at_net_free(net);
}

static void check_data_parallel(void) {
    if (at_data_load(&data, "fashion-mnist") != AT_OK) {
        printf("  data-parallel training skipped: %s\n", at_error_message());
        return;
    }
    CHECK_OK(at_dataset_truncate(&data.train, 960));
    CHECK_OK(at_dataset_truncate(&data.test, 1000));
    char dir[] = "/tmp/advtrain-dp-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    check_training(AT_ADV_NONE, 2, dir);
    check_training(AT_ADV_NONE, 3, dir);
    check_training(AT_ADV_FGSM, 2, dir);
    check_training(AT_ADV_PGD, 3, dir);
    check_training(AT_ADV_TRADES, 2, dir);
    with_qat = true; /* the activation ranges: the whole batch's extremes on every rank */
    check_training(AT_ADV_PGD, 2, dir);
    with_qat = false;
    char path[64];
    snprintf(path, sizeof path, "%s/last.safetensors", dir);
    int epoch = 0;
    CHECK_OK(at_checkpoint_epoch(dir, &epoch));
    CHECK(epoch == EPOCHS);
    remove(path);
    rmdir(dir);
    check_refused();
    at_data_free(&data);
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
    at_set_threads(2);
    check_data_parallel();
    return tu_finish("test_distributed");
}
