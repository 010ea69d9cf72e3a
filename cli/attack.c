/* advtrain attack: runs one attack at one eps on the first N test samples and writes the
 * adversarial examples with their labels, for other tools, plus a PNG grid to look at.
 *   *.safetensors   x_adv (N,C,H,W) float32, x (clean), labels, adv_pred (float32 class ids)
 *   *.idx / *.idx.gz  IDX images (uint8, rounded towards the clean pixel so the 8-bit example
 *                   stays inside the eps-ball) and <stem>-labels.idx[.gz] next to them */
#include "attack_cli.h"
#include "outpaths.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static const char *const FASHION_NAMES[10] = {"T-SHIRT", "TROUSER", "PULLOVER", "DRESS", "COAT",
                                              "SANDAL",  "SHIRT",   "SNEAKER",  "BAG",   "BOOT"};

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Writes bytes through zlib (gzip when gz) to path atomically. */
static bool write_blob(const char *path, bool gz, const unsigned char *head, size_t nhead,
                       const unsigned char *data, size_t n) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    gzFile f = gzopen(tmp, gz ? "wb6" : "wbT");
    if (!f) {
        fprintf(stderr, "advtrain attack: cannot create %s\n", tmp);
        return false;
    }
    bool ok = gzwrite(f, head, (unsigned)nhead) == (int)nhead;
    for (size_t at = 0; ok && at < n; at += 1u << 24) {
        unsigned chunk = (unsigned)(n - at < (1u << 24) ? n - at : (1u << 24));
        ok = gzwrite(f, data + at, chunk) == (int)chunk;
    }
    ok = gzclose(f) == Z_OK && ok;
    if (!ok || rename(tmp, path) != 0) {
        remove(tmp);
        fprintf(stderr, "advtrain attack: cannot write %s\n", path);
        return false;
    }
    return true;
}

static void be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* 8-bit pixels: round the perturbation towards zero (towards the clean pixel, which is k/255),
 * so the stored example is still inside the eps-ball and [0,1]. */
static unsigned char quantize(float adv, float clean) {
    double c = floor((double)clean * 255.0 + 0.5), d = ((double)adv - clean) * 255.0;
    double q = c + (d >= 0 ? floor(d + 1e-4) : ceil(d - 1e-4));
    return (unsigned char)(q < 0 ? 0 : (q > 255 ? 255 : q));
}

static bool write_idx(const char *path, const float *x, const float *adv, const int32_t *labels, int n, int c,
                      int h, int w, char *labels_path, size_t cap) {
    if (c != 1) {
        fprintf(stderr, "advtrain attack: IDX output holds single-channel images; this model takes %d channels "
                        "(use .safetensors)\n", c);
        return false;
    }
    bool gz = ends_with(path, ".gz");
    size_t stem = strlen(path) - (gz ? 3 : 0);
    if (stem >= 4 && strncmp(path + stem - 4, ".idx", 4) == 0) stem -= 4;
    snprintf(labels_path, cap, "%.*s-labels.idx%s", (int)stem, path, gz ? ".gz" : "");
    size_t D = (size_t)h * w;
    unsigned char *pix = malloc((size_t)n * D), *lab = malloc((size_t)n);
    if (!pix || !lab) {
        free(pix);
        free(lab);
        fprintf(stderr, "advtrain attack: out of memory\n");
        return false;
    }
    for (size_t i = 0; i < (size_t)n * D; i++) pix[i] = quantize(adv[i], x[i]);
    for (int i = 0; i < n; i++) lab[i] = (unsigned char)labels[i];
    unsigned char head[16];
    be32(head, 0x00000803u);
    be32(head + 4, (uint32_t)n);
    be32(head + 8, (uint32_t)h);
    be32(head + 12, (uint32_t)w);
    bool ok = write_blob(path, gz, head, 16, pix, (size_t)n * D);
    be32(head, 0x00000801u);
    ok = ok && write_blob(labels_path, gz, head, 8, lab, (size_t)n);
    free(pix);
    free(lab);
    return ok;
}

/* What `advtrain attack` was asked for. */
typedef struct attack_options {
    const char *data_source, *model_spec, *split, *out, *grid;
    int samples, threads, grid_rows, batch;
    atk_cli_settings set;
    /* From the above: the attack, its eps, the --target class (-1: none), the grid's path. */
    at_attack_config cfg;
    float eps;
    int32_t target_class;
    char grid_path[4200];
} attack_options;

/* The attacked samples: clean and adversarial images, labels, predictions, targets. */
typedef struct attack_buffers {
    float *x, *adv;
    int32_t *labels, *clean_pred, *adv_pred, *targets;
} attack_buffers;

/* One allocation holds them all, from b->x. */
static bool buffers_alloc(attack_buffers *b, int n, int D) {
    const size_t images = (size_t)n * D;
    b->x = malloc(sizeof(float) * 2 * images + sizeof(int32_t) * 4 * (size_t)n);
    if (!b->x) {
        fprintf(stderr, "advtrain attack: out of memory for %d samples\n", n);
        return false;
    }
    b->adv = b->x + images;
    b->labels = (int32_t *)(b->adv + images);
    b->clean_pred = b->labels + n;
    b->adv_pred = b->clean_pred + n;
    b->targets = b->adv_pred + n;
    return true;
}

/* The network's class for each of n samples of x. */
static bool predict(at_net *net, const float *x, int n, int32_t *pred) {
    const int D = at_net_in_size(net), K = at_net_out_size(net);
    for (int first = 0; first < n; first += 256) {
        int m = n - first < 256 ? n - first : 256;
        const float *z;
        at_status s = at_net_forward(net, x + (size_t)first * D, m, &z);
        if (s != AT_OK) {
            cli_error("attack", "forward pass", s);
            return false;
        }
        for (int i = 0; i < m; i++) pred[first + i] = at_argmax(z + (size_t)i * K, K);
    }
    return true;
}

static bool write_safetensors(const attack_options *o, const atk_cli_model *m, const attack_buffers *b, int n,
                              const at_attack_result *res, const char *path) {
    int c, h, w;
    at_net_in_shape(m->net, &c, &h, &w);
    float *lf = malloc(sizeof(float) * (size_t)n * 2);
    if (!lf) return false;
    for (int i = 0; i < n; i++) {
        lf[i] = (float)b->labels[i];
        lf[n + i] = (float)b->adv_pred[i];
    }
    at_st_entry entries[4] = {
        {"x_adv", 4, {n, c, h, w}, b->adv},
        {"x", 4, {n, c, h, w}, b->x},
        {"labels", 1, {n}, lf},
        {"adv_pred", 1, {n}, lf + n},
    };
    char steps[32], restarts[32], seed[32], epsv[32], rob[32];
    snprintf(steps, sizeof steps, "%d", res->steps);
    snprintf(restarts, sizeof restarts, "%d", res->restarts);
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)o->cfg.seed);
    snprintf(epsv, sizeof epsv, "%.9g", (double)o->eps);
    snprintf(rob, sizeof rob, "%.6f", (double)res->robust / n);
    at_st_meta meta[] = {
        {"advtrain.attack", (char *)at_attack_name(&o->cfg)}, {"advtrain.eps", epsv},
        {"advtrain.eps_scale", "0-1 pixels"}, {"advtrain.norm", o->cfg.norm == AT_NORM_L2 ? "l2" : "linf"},
        {"advtrain.steps", steps},           {"advtrain.restarts", restarts},
        {"advtrain.seed", seed},             {"advtrain.model", (char *)path},
        {"advtrain.data", (char *)m->data_source}, {"advtrain.robust_accuracy", rob},
    };
    at_status s = at_st_write(o->out, entries, 4, meta, (int)(sizeof meta / sizeof *meta));
    free(lf);
    if (s != AT_OK) {
        cli_error("attack", "writing the examples", s);
        return false;
    }
    printf("wrote %s: x_adv, x, labels, adv_pred (%d example%s, float32)\n", o->out, n, cli_s(n));
    return true;
}

/* The IDX files; then the examples become what they hold (8-bit), and their accuracy is
 * reported: that is what other tools will see. */
static bool write_idx_files(const attack_options *o, const atk_cli_model *m, attack_buffers *b, int n) {
    int c, h, w;
    at_net_in_shape(m->net, &c, &h, &w);
    const int D = at_net_in_size(m->net);
    char labels_path[4300];
    if (!write_idx(o->out, b->x, b->adv, b->labels, n, c, h, w, labels_path, sizeof labels_path)) return false;
    for (size_t i = 0; i < (size_t)n * D; i++) b->adv[i] = quantize(b->adv[i], b->x[i]) / 255.0f;
    if (!predict(m->net, b->adv, n, b->adv_pred)) return false;
    int hits = 0;
    for (int i = 0; i < n; i++) hits += b->adv_pred[i] == b->labels[i] && b->clean_pred[i] == b->labels[i];
    printf("wrote %s and %s (%d example%s, 8-bit pixels rounded towards the clean image; robust accuracy "
           "on them %.2f%%)\n", o->out, labels_path, n, cli_s(n), 100.0 * hits / n);
    return true;
}

static bool write_grid(const attack_options *o, const atk_cli_model *m, const attack_buffers *b, int n) {
    int c, h, w;
    at_net_in_shape(m->net, &c, &h, &w);
    const int D = at_net_in_size(m->net), K = at_net_out_size(m->net);
    const float eps = o->eps;
    int rows = o->grid_rows < n ? o->grid_rows : n;
    char title[128], err[256];
    snprintf(title, sizeof title, "%s EPS %.4g %s", at_attack_name(&o->cfg), (double)eps,
             o->cfg.norm == AT_NORM_L2 ? "L2" : "LINF");
    const char *const *names = strncmp(m->data_source, "fashion-mnist", 13) == 0 && K == 10 ? FASHION_NAMES : NULL;
    float scale = o->cfg.norm == AT_NORM_LINF && eps > 0 ? eps : 0.0f;
    if (scale == 0.0f) {
        for (size_t i = 0; i < (size_t)rows * D; i++) {
            float d = fabsf(b->adv[i] - b->x[i]);
            scale = d > scale ? d : scale;
        }
        if (scale == 0.0f) scale = 1.0f;
    }
    if (!grid_write_png(o->grid_path, title, b->x, b->adv, b->labels, b->clean_pred, b->adv_pred, rows, c, h, w, scale,
                        names, err, sizeof err)) {
        fprintf(stderr, "advtrain attack: %s\n", err);
        return false;
    }
    printf("wrote %s (%d sample%s: clean, perturbation, adversarial)\n", o->grid_path, rows, cli_s(rows));
    return true;
}

/* The attack on the selected samples, then the clean predictions for the grid. */
static bool run_attack(const attack_options *o, const atk_cli_model *m, attack_buffers *b, int n,
                       at_attack_result *res) {
    for (int i = 0; i < n; i++) {
        b->clean_pred[i] = i; /* sample order for at_dataset_batch */
        b->targets[i] = o->target_class;
    }
    at_dataset_batch(m->ds, b->clean_pred, n, b->x, b->labels, NULL);
    at_attack_config cfg = o->cfg;
    cfg.comm = cli_comm(); /* under mpirun: the ranks share the samples, every rank gets every row */
    if (o->target_class >= 0) cfg.targets = b->targets;
    const char *name = at_attack_name(&cfg);
    char label[96];
    snprintf(label, sizeof label, "%s eps %g", name, (double)o->eps);
    cfg.progress = atk_cli_progress;
    cfg.user = label;
    at_status s = at_attack_run(m->net, &cfg, b->x, b->labels, n, b->adv, b->adv_pred, res);
    if (s != AT_OK) {
        cli_error("attack", name, s);
        return false;
    }
    return predict(m->net, b->x, n, b->clean_pred);
}

/* Attacks the first --samples samples and writes the examples and the grid. */
static int attack_model(const attack_options *o, const atk_cli_model *m, const char *path) {
    at_dataset *ds = m->ds;
    if (!ds->labels) {
        fprintf(stderr, "advtrain attack: %s is a regression dataset; attacks need classes\n", m->data_source);
        return EXIT_RUN_FAILED;
    }
    at_status s;
    if (o->samples < ds->n && (s = at_dataset_truncate(ds, o->samples)) != AT_OK) {
        cli_error("attack", "selecting samples", s);
        return EXIT_RUN_FAILED;
    }
    const int n = ds->n, K = at_net_out_size(m->net);
    attack_buffers b = {0};
    int status = EXIT_RUN_FAILED;
    at_attack_result res;
    if (!buffers_alloc(&b, n, at_dataset_sample_size(ds))) goto done;
    if (o->target_class >= K) {
        fprintf(stderr, "advtrain attack: --target %d: the model has %d classes\n", o->target_class, K);
        status = EXIT_USAGE;
        goto done;
    }
    if (!run_attack(o, m, &b, n, &res)) goto done;
    char eps_text[48];
    atk_cli_eps_text(o->eps, eps_text, sizeof eps_text);
    printf("%s on %s (%s %s, first %d): eps %s, 0-1 pixel scale\n", at_attack_name(&o->cfg), path, m->data.name,
           o->split, n, eps_text);
    printf("clean accuracy %.2f%%, robust accuracy %.2f%% (%.1fs)\n", 100.0 * res.clean_correct / n,
           100.0 * res.robust / n, res.seconds);
    if (res.targeted) printf("target reached on %d of %d attacked samples\n", res.target_hits, res.targeted);
    if (!cli_is_root()) { /* rank 0 writes the files */
        status = 0;
        goto done;
    }
    bool ok = ends_with(o->out, ".safetensors") ? write_safetensors(o, m, &b, n, &res, path)
                                                : write_idx_files(o, m, &b, n);
    if (ok && write_grid(o, m, &b, n)) status = 0;
done:
    free(b.x);
    return status;
}

/* The grid's path: --grid, else the output's with .png. */
static void grid_path_of(attack_options *o) {
    if (o->grid) {
        snprintf(o->grid_path, sizeof o->grid_path, "%s", o->grid);
        return;
    }
    size_t stem = strlen(o->out);
    if (ends_with(o->out, ".safetensors")) stem -= strlen(".safetensors");
    else if (ends_with(o->out, ".idx.gz")) stem -= strlen(".idx.gz");
    else stem -= strlen(".idx");
    snprintf(o->grid_path, sizeof o->grid_path, "%.*s.png", (int)stem, o->out);
}

/* Usage errors, before anything is loaded; fills o->cfg, o->eps, o->target_class. */
static bool usage_ok(const cli_command *cmd, attack_options *o) {
    if (!o->set.attacks || !o->set.eps || !o->out) {
        fprintf(stderr, "advtrain attack: --attack, --eps and --out are required (usage: %s)\n", cmd->usage);
        return false;
    }
    if (!ends_with(o->out, ".safetensors") && !ends_with(o->out, ".idx") && !ends_with(o->out, ".idx.gz")) {
        fprintf(stderr, "advtrain attack: --out %s: name it .safetensors, .idx or .idx.gz\n", o->out);
        return false;
    }
    if (strcmp(o->split, "test") != 0 && strcmp(o->split, "train") != 0) {
        fprintf(stderr, "advtrain attack: --split %s: use test or train\n", o->split);
        return false;
    }
    float eps[ATK_CLI_MAX];
    int neps, ncfg;
    if (!cli_parse_eps("attack", o->set.eps, eps, ATK_CLI_MAX, &neps)) return false;
    if (neps != 1) {
        fprintf(stderr, "advtrain attack: --eps takes one value here (eval compares several)\n");
        return false;
    }
    o->set.batch = o->batch;
    at_attack_config cfgs[ATK_CLI_MAX];
    if (!atk_cli_configs("attack", &o->set, 1 << 30, cfgs, ATK_CLI_MAX, &ncfg, &o->target_class)) return false;
    if (ncfg != 1) {
        fprintf(stderr, "advtrain attack: --attack takes one attack here (eval compares several)\n");
        return false;
    }
    o->cfg = cfgs[0];
    o->cfg.eps = o->eps = eps[0];
    return true;
}

int cmd_attack(int argc, char **argv) {
    const char *data_source = NULL, *model_spec = NULL, *split = "test", *out = NULL, *grid = NULL;
    int samples = 100, threads = 0, grid_rows = 8, batch = 0;
    atk_cli_settings set;
    memset(&set, 0, sizeof set);
    atk_cli_help help;
    atk_cli_help_texts(&help, "one of: ");
    cli_option opts[] = {
        {"attack", OPT_STRING, &set.attacks, "NAME", help.attack, 1, 0},
        {"eps", OPT_STRING, &set.eps, "EPS", "radius on the 0-1 pixel scale (8/255 accepted)", 1, 0},
        {"out", OPT_STRING, &out, "FILE", "adversarial examples: FILE.safetensors, FILE.idx or FILE.idx.gz", 1, 0},
        {"grid", OPT_STRING, &grid, "FILE.png", "image grid (default: the output name with .png)", 1, 0},
        {"grid-rows", OPT_INT, &grid_rows, "N", "samples shown in the grid (default 8)", 1, 1000},
        {"samples", OPT_INT, &samples, "N", "attack the first N samples (default 100)", 1, 100000000},
        CLI_OPTS_MODEL_FILE(&data_source, &model_spec),
        CLI_OPT_SPLIT(&split),
        ATK_CLI_OPTIONS(set, help),
        {"batch", OPT_INT, &batch, "N", "samples attacked together (default 1000)", 1, 65536},
        CLI_OPT_THREADS(&threads),
    };
    const char *positional[1] = {NULL};
    cli_command cmd = {"attack",
                       "advtrain attack MODEL.safetensors --attack NAME --eps EPS --out adv.safetensors|adv.idx.gz",
                       "Write adversarial examples of the first N samples (and their labels) for other tools, and\n"
                       "a PNG grid of clean image, perturbation and adversarial image with predictions.",
                       opts, (int)(sizeof opts / sizeof *opts), positional, 1, 0};
    int early = cli_start(&cmd, argc, argv);
    if (early >= 0) return early;
    attack_options o = {data_source, model_spec, split, out, grid, samples, threads, grid_rows, batch, set};
    if (!usage_ok(&cmd, &o)) return EXIT_USAGE;
    grid_path_of(&o);
    int bad = out_check_file("attack", "--out", out);
    if (!bad) bad = out_check_file("attack", grid ? "--grid" : "--grid (from --out)", o.grid_path);
    if (bad) return bad;
    if (threads > 0) at_set_threads(threads);
    atk_cli_model m;
    int status = EXIT_RUN_FAILED;
    if (atk_cli_open("attack", &m, positional[0], data_source, model_spec, split, false))
        status = attack_model(&o, &m, positional[0]);
    atk_cli_close(&m);
    return status;
}
