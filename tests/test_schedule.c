/* Learning-rate schedules: PyTorch's sequences (tests/fixtures/reg_schedules.safetensors, from
 * tools/make_reg_fixtures.py), hand-computed values, bad configurations, and the schedules as
 * at_train applies them (per epoch; one-cycle per batch; plateau on the monitored loss). */
#include "advtrain.h"
#include "testutil.h"

static at_st_file *F;

static const at_st_tensor *need(const char *name) {
    const at_st_tensor *t = at_st_find(F, name);
    CHECK_MSG(t != NULL, "tensor %s missing from reg_schedules.safetensors", name);
    return t;
}

static void compare_seq(const char *what, const float *got, const at_st_tensor *want, int n) {
    if (!want) return;
    CHECK_MSG((int)want->count == n, "%s: %d values, PyTorch %zu", what, n, want->count);
    for (int i = 0; i < n && i < (int)want->count; i++)
        CHECK_MSG(fabs(got[i] - want->data[i]) <= 1e-8 + 2e-6 * fabs(want->data[i]),
                  "%s[%d]: got %.9g, PyTorch %.9g", what, i, got[i], want->data[i]);
}

static void sequence(const char *name, const at_schedule_config *c, int total) {
    const at_st_tensor *want = need(name);
    if (!want) return;
    at_schedule s;
    CHECK_OK(at_schedule_init(&s, c, 0.1f, total, false));
    float got[64];
    int n = (int)want->count;
    for (int t = 0; t < n && t < 64; t++) got[t] = at_schedule_lr(&s, t);
    compare_seq(name, got, want, n);
}

static void plateau(const char *name, const at_schedule_config *c, bool maximize) {
    char mname[64];
    snprintf(mname, sizeof mname, "%s_metrics", name);
    const at_st_tensor *m = need(mname), *want = need(name);
    if (!m || !want) return;
    at_schedule s;
    CHECK_OK(at_schedule_init(&s, c, 0.1f, 0, maximize));
    float got[64];
    int n = (int)m->count;
    for (int i = 0; i < n && i < 64; i++) got[i] = at_schedule_observe(&s, m->data[i]);
    compare_seq(name, got, want, n);
}

static void test_against_pytorch(void) {
    at_schedule_config c = at_schedule_defaults(AT_SCHEDULE_STEP);
    c.step_size = 3;
    c.gamma = 0.5f;
    sequence("step", &c, 12);
    c = at_schedule_defaults(AT_SCHEDULE_COSINE);
    c.t_max = 10;
    c.min_lr = 0.001f;
    sequence("cosine", &c, 12);
    /* t_max = 0: the period is the run's length */
    c.t_max = 0;
    sequence("cosine", &c, 10);
    c = at_schedule_defaults(AT_SCHEDULE_ONECYCLE);
    sequence("onecycle", &c, 20);
    c = at_schedule_defaults(AT_SCHEDULE_PLATEAU);
    c.patience = 2;
    c.cooldown = 1;
    c.min_lr = 1e-4f;
    plateau("plateau", &c, false);
    c = at_schedule_defaults(AT_SCHEDULE_PLATEAU);
    c.factor = 0.5f;
    c.patience = 3;
    plateau("plateau_max", &c, true);
    c = at_schedule_defaults(AT_SCHEDULE_PLATEAU);
    CHECK(c.factor == 0.1f && c.patience == 10 && c.threshold == 1e-4f && c.cooldown == 0);
    plateau("plateau_default", &c, false);
}

static void test_hand_values(void) {
    at_schedule s;
    at_schedule_config c = at_schedule_defaults(AT_SCHEDULE_CONSTANT);
    CHECK_OK(at_schedule_init(&s, &c, 0.05f, 10, false));
    CHECK(at_schedule_lr(&s, 0) == 0.05f && at_schedule_lr(&s, 9) == 0.05f);
    CHECK(at_schedule_observe(&s, 1.0f) == 0.05f);

    c = at_schedule_defaults(AT_SCHEDULE_COSINE);
    CHECK_OK(at_schedule_init(&s, &c, 1.0f, 4, false));
    CHECK_NEAR(at_schedule_lr(&s, 0), 1.0, 1e-7);
    CHECK_NEAR(at_schedule_lr(&s, 2), 0.5, 1e-7); /* (1 + cos(pi/2)) / 2 */
    CHECK_NEAR(at_schedule_lr(&s, 4), 0.0, 1e-7);

    /* one-cycle over 10 steps, pct 0.3: up over steps 0..2, down over 2..9 */
    c = at_schedule_defaults(AT_SCHEDULE_ONECYCLE);
    CHECK_OK(at_schedule_init(&s, &c, 1.0f, 10, false));
    CHECK_NEAR(at_schedule_lr(&s, 0), 1.0 / 25, 1e-7);
    CHECK_NEAR(at_schedule_lr(&s, 1), (1.0 + 1.0 / 25) / 2, 1e-7);
    CHECK_NEAR(at_schedule_lr(&s, 2), 1.0, 1e-7);
    CHECK_NEAR(at_schedule_lr(&s, 9), 1.0 / 25 / 1e4, 1e-9);
    float prev = 2.0f;
    for (int t = 2; t < 10; t++) {
        float lr = at_schedule_lr(&s, t);
        CHECK_MSG(lr < prev, "one-cycle must fall after its peak (step %d)", t);
        prev = lr;
    }
}

static void test_bad_configs(void) {
    at_schedule s;
    at_schedule_config c = at_schedule_defaults(AT_SCHEDULE_STEP);
    c.step_size = 0;
    CHECK(at_schedule_init(&s, &c, 0.1f, 10, false) == AT_ERR_ARG);
    c = at_schedule_defaults(AT_SCHEDULE_ONECYCLE);
    CHECK(at_schedule_init(&s, &c, 0.1f, 1, false) == AT_ERR_ARG);
    c.pct_start = 1.5f;
    CHECK(at_schedule_init(&s, &c, 0.1f, 100, false) == AT_ERR_ARG);
    c = at_schedule_defaults(AT_SCHEDULE_PLATEAU);
    c.factor = 1.0f;
    CHECK(at_schedule_init(&s, &c, 0.1f, 10, false) == AT_ERR_ARG);
    CHECK(strstr(at_error_message(), "factor") != NULL);
    c = at_schedule_defaults(AT_SCHEDULE_COSINE);
    CHECK(at_schedule_init(&s, &c, 0.1f, 0, false) == AT_ERR_ARG);
    c.kind = (at_schedule_kind)99;
    CHECK(at_schedule_init(&s, &c, 0.1f, 10, false) == AT_ERR_ARG);
}

/* A tiny regression set: 32 samples, 4 features, 2 targets. */
static void make_data(at_dataset *d, float *x, float *t) {
    at_rng r;
    at_rng_seed(&r, 7);
    for (int i = 0; i < 32 * 4; i++) x[i] = at_rng_normal(&r);
    for (int i = 0; i < 32; i++) {
        t[2 * i] = x[4 * i] - 0.5f * x[4 * i + 2];
        t[2 * i + 1] = 0.3f * x[4 * i + 1] + 0.1f * at_rng_normal(&r);
    }
    memset(d, 0, sizeof *d);
    d->n = 32;
    d->c = 4;
    d->h = d->w = 1;
    d->features = x;
    d->targets = t;
    d->target_dim = 2;
}

typedef struct lr_log {
    float lr[64];
    int n;
} lr_log;

static bool record(void *user, const at_epoch_stats *s) {
    lr_log *l = user;
    if (l->n < 64) l->lr[l->n++] = s->lr;
    return true;
}

/* at_train sets the learning rate from the schedule: per epoch for step and cosine, per batch
 * for one-cycle (the epoch reports the last batch's), and from the monitored loss for plateau. */
static void test_in_training(void) {
    float x[128], t[64];
    at_dataset d;
    make_data(&d, x, t);
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, "linear:2", 4, 1, 1));
    if (!net) return;
    at_train_callbacks cb = {NULL, NULL, record};
    lr_log log;

    at_train_config cfg = at_train_defaults();
    cfg.epochs = 9;
    cfg.batch = 8;
    cfg.optim.lr = 0.1f;
    cfg.schedule = at_schedule_defaults(AT_SCHEDULE_STEP);
    cfg.schedule.step_size = 0; /* a third of the epochs: 3 */
    memset(&log, 0, sizeof log);
    cb.user = &log;
    at_net_init(net, 1);
    CHECK_OK(at_train(net, &d, NULL, NULL, &cfg, &cb));
    CHECK(log.n == 9);
    for (int e = 0; e < log.n; e++)
        CHECK_NEAR(log.lr[e], 0.1 * pow(0.1, e / 3), 1e-6 * log.lr[e]);

    cfg.schedule = at_schedule_defaults(AT_SCHEDULE_ONECYCLE);
    memset(&log, 0, sizeof log);
    at_net_init(net, 1);
    CHECK_OK(at_train(net, &d, NULL, NULL, &cfg, &cb));
    /* 4 batches per epoch, 36 steps: the last epoch ends at the final, tiny rate */
    CHECK_NEAR(log.lr[8], 0.1 / 25 / 1e4, 1e-9);
    at_schedule s;
    CHECK_OK(at_schedule_init(&s, &cfg.schedule, 0.1f, 36, false));
    CHECK_NEAR(log.lr[2], at_schedule_lr(&s, 11), 1e-9);

    /* plateau: a negligible learning rate leaves the (training) loss flat, so every epoch after
     * the first is a bad one; with patience 1 the rate halves after epochs 3, 5, 7, ... */
    cfg.optim.lr = 1e-7f; /* (torch reduces only by more than 1e-8) */
    cfg.schedule = at_schedule_defaults(AT_SCHEDULE_PLATEAU);
    cfg.schedule.patience = 1;
    cfg.schedule.factor = 0.5f;
    memset(&log, 0, sizeof log);
    at_net_init(net, 1);
    CHECK_OK(at_train(net, &d, NULL, NULL, &cfg, &cb));
    CHECK(log.n == 9);
    CHECK(log.lr[0] == 1e-7f && log.lr[1] == 1e-7f && log.lr[2] == 1e-7f);
    CHECK_NEAR(log.lr[3], 0.5e-7, 1e-13);
    CHECK_NEAR(log.lr[4], 0.5e-7, 1e-13);
    CHECK_NEAR(log.lr[5], 0.25e-7, 1e-13);
    at_net_free(net);
}

int main(void) {
    at_set_threads(1); /* tiny models: threads only add synchronisation */
    const char *path = tu_source_path("tests/fixtures/reg_schedules.safetensors");
    at_status s = at_st_read(path, &F);
    CHECK_OK(s);
    if (s == AT_OK) {
        test_against_pytorch();
        at_st_free(F);
    }
    test_hand_values();
    test_bad_configs();
    test_in_training();
    return tu_finish("test_schedule");
}
