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

int cmd_attack(int argc, char **argv) {
    const char *data_source = NULL, *model_spec = NULL, *split = "test", *out = NULL, *grid = NULL;
    int samples = 100, threads = 0, grid_rows = 8, batch = 0;
    atk_cli_settings set;
    memset(&set, 0, sizeof set);
    cli_option opts[] = {
        {"attack", OPT_STRING, &set.attacks, "NAME", "fgsm, pgd, pgd-l2, cw, apgd-ce, apgd-dlr, apgd-t, square or auto", 1, 0},
        {"eps", OPT_STRING, &set.eps, "EPS", "radius on the 0-1 pixel scale (8/255 accepted)", 1, 0},
        {"out", OPT_STRING, &out, "FILE", "adversarial examples: FILE.safetensors, FILE.idx or FILE.idx.gz", 1, 0},
        {"grid", OPT_STRING, &grid, "FILE.png", "image grid (default: the output name with .png)", 1, 0},
        {"grid-rows", OPT_INT, &grid_rows, "N", "samples shown in the grid (default 8)", 1, 1000},
        {"samples", OPT_INT, &samples, "N", "attack the first N samples (default 100)", 1, 100000000},
        {"data", OPT_STRING, &data_source, "SOURCE", "dataset (default: the one the model was trained on)", 1, 0},
        {"model", OPT_STRING, &model_spec, "NAME|SPEC", "architecture, for weight files without advtrain metadata", 1, 0},
        {"split", OPT_STRING, &split, "test|train", "which split (default test)", 1, 0},
        {"norm", OPT_STRING, &set.norm, "linf|l2", "threat model (default linf)", 1, 0},
        {"steps", OPT_INT, &set.steps, "K", "iterations (pgd default 20, apgd/auto 100)", 1, 1000000},
        {"restarts", OPT_INT, &set.restarts, "R", "random restarts (default 1)", 1, 10000},
        {"alpha", OPT_FLOAT, &set.alpha, "A", "PGD step size (default 2.5*eps/steps)", 1e-9, 10},
        {"queries", OPT_INT, &set.queries, "Q", "Square queries (default 5000)", 1, 10000000},
        {"target", OPT_STRING, &set.target, "T", "targeted: random, least-likely or a class number", 1, 0},
        {"seed", OPT_U64, &set.seed, "S", "random starts and Square's search (default 0)", 1, 0},
        {"all", OPT_FLAG, &set.all, NULL, "also attack samples that are misclassified already", 1, 0},
        {"last-iterate", OPT_FLAG, &set.last_iterate, NULL, "pgd, cw: keep each sample's last iterate (as torchattacks) instead of the first that fools the model", 1, 0},
        {"batch", OPT_INT, &batch, "N", "samples attacked together (default 1000)", 1, 65536},
        {"threads", OPT_INT, &threads, "N", "compute threads (default: all cores)", 1, 1024},
    };
    const char *positional[1] = {NULL};
    cli_command cmd = {"attack",
                       "advtrain attack MODEL.safetensors --attack NAME --eps EPS --out adv.safetensors|adv.idx.gz",
                       "Write adversarial examples of the first N samples (and their labels) for other tools, and\n"
                       "a PNG grid of clean image, perturbation and adversarial image with predictions.",
                       opts, (int)(sizeof opts / sizeof *opts), positional, 1, 0};
    int early = cli_start(&cmd, argc, argv);
    if (early >= 0) return early;
    if (!set.attacks || !set.eps || !out) {
        fprintf(stderr, "advtrain attack: --attack, --eps and --out are required (usage: %s)\n", cmd.usage);
        return EXIT_USAGE;
    }
    bool st = ends_with(out, ".safetensors"), idx = ends_with(out, ".idx") || ends_with(out, ".idx.gz");
    if (!st && !idx) {
        fprintf(stderr, "advtrain attack: --out %s: name it .safetensors, .idx or .idx.gz\n", out);
        return EXIT_USAGE;
    }
    if (strcmp(split, "test") != 0 && strcmp(split, "train") != 0) {
        fprintf(stderr, "advtrain attack: --split %s: use test or train\n", split);
        return EXIT_USAGE;
    }
    float eps[ATK_CLI_MAX];
    int neps, ncfg;
    if (!cli_parse_eps("attack", set.eps, eps, ATK_CLI_MAX, &neps)) return EXIT_USAGE;
    if (neps != 1) {
        fprintf(stderr, "advtrain attack: --eps takes one value here (eval compares several)\n");
        return EXIT_USAGE;
    }
    set.batch = batch;
    at_attack_config cfgs[ATK_CLI_MAX];
    int32_t target_class;
    if (!atk_cli_configs("attack", &set, 1 << 30, cfgs, ATK_CLI_MAX, &ncfg, &target_class)) return EXIT_USAGE;
    if (ncfg != 1) {
        fprintf(stderr, "advtrain attack: --attack takes one attack here (eval compares several)\n");
        return EXIT_USAGE;
    }
    char grid_path[4200];
    if (grid) {
        snprintf(grid_path, sizeof grid_path, "%s", grid);
    } else {
        size_t stem = strlen(out);
        if (ends_with(out, ".safetensors")) stem -= strlen(".safetensors");
        else if (ends_with(out, ".idx.gz")) stem -= strlen(".idx.gz");
        else stem -= strlen(".idx");
        snprintf(grid_path, sizeof grid_path, "%.*s.png", (int)stem, out);
    }
    int bad = out_check_file("attack", "--out", out);
    if (!bad) bad = out_check_file("attack", grid ? "--grid" : "--grid (from --out)", grid_path);
    if (bad) return bad;
    if (threads > 0) at_set_threads(threads);

    const char *path = positional[0];
    at_net *net = NULL;
    at_st_file *file = NULL;
    at_data data;
    memset(&data, 0, sizeof data);
    float *x = NULL, *adv = NULL;
    int32_t *labels = NULL, *clean_pred = NULL, *adv_pred = NULL, *targets = NULL;
    int status = EXIT_RUN_FAILED;
    at_status s = at_st_read(path, &file);
    if (s != AT_OK) {
        cli_error("attack", "cannot read the model", s);
        return EXIT_RUN_FAILED;
    }
    if (!data_source) data_source = at_st_meta_get(file, "advtrain.data");
    if (!data_source) data_source = "fashion-mnist";
    if (!cli_load_data("attack", &data, data_source)) goto done;
    at_dataset *ds = strcmp(split, "train") == 0 ? &data.train : &data.test;
    if (!ds->labels) {
        fprintf(stderr, "advtrain attack: %s is a regression dataset; attacks need classes\n", data_source);
        goto done;
    }
    if (samples < ds->n && (s = at_dataset_truncate(ds, samples)) != AT_OK) {
        cli_error("attack", "selecting samples", s);
        goto done;
    }
    if (model_spec) {
        s = at_net_from_spec(&net, model_spec, ds->c, ds->h, ds->w);
        if (s == AT_OK) s = at_net_load_weights(net, file, path);
    } else {
        s = at_model_load(&net, path, NULL);
    }
    if (s != AT_OK) {
        cli_error("attack", "cannot load the model", s);
        goto done;
    }
    const int n = ds->n, D = at_dataset_sample_size(ds), K = at_net_out_size(net);
    x = malloc(sizeof(float) * (size_t)n * D);
    adv = malloc(sizeof(float) * (size_t)n * D);
    labels = malloc(sizeof(int32_t) * (size_t)n);
    clean_pred = malloc(sizeof(int32_t) * (size_t)n);
    adv_pred = malloc(sizeof(int32_t) * (size_t)n);
    targets = malloc(sizeof(int32_t) * (size_t)n);
    if (!x || !adv || !labels || !clean_pred || !adv_pred || !targets) {
        fprintf(stderr, "advtrain attack: out of memory for %d samples\n", n);
        goto done;
    }
    if (target_class >= K) {
        fprintf(stderr, "advtrain attack: --target %d: the model has %d classes\n", target_class, K);
        status = EXIT_USAGE;
        goto done;
    }
    for (int i = 0; i < n; i++) {
        clean_pred[i] = i; /* sample order for at_dataset_batch */
        targets[i] = target_class;
    }
    at_dataset_batch(ds, clean_pred, n, x, labels, NULL);
    at_attack_config cfg = cfgs[0];
    cfg.eps = eps[0];
    if (target_class >= 0) cfg.targets = targets;
    const char *name = at_attack_name(&cfg);
    char label[96];
    snprintf(label, sizeof label, "%s eps %g", name, (double)eps[0]);
    cfg.progress = atk_cli_progress;
    cfg.user = label;
    at_attack_result res;
    if ((s = at_attack_run(net, &cfg, x, labels, n, adv, adv_pred, &res)) != AT_OK) {
        cli_error("attack", name, s);
        goto done;
    }
    /* Clean predictions for the grid. */
    for (int first = 0; first < n; first += 256) {
        int m = n - first < 256 ? n - first : 256;
        const float *z;
        if ((s = at_net_forward(net, x + (size_t)first * D, m, &z)) != AT_OK) {
            cli_error("attack", "forward pass", s);
            goto done;
        }
        for (int i = 0; i < m; i++) clean_pred[first + i] = at_argmax(z + (size_t)i * K, K);
    }
    char eps_text[48];
    atk_cli_eps_text(eps[0], eps_text, sizeof eps_text);
    printf("%s on %s (%s %s, first %d): eps %s, 0-1 pixel scale\n", name, path, data.name, split, n, eps_text);
    printf("clean accuracy %.2f%%, robust accuracy %.2f%% (%.1fs)\n", 100.0 * res.clean_correct / n,
           100.0 * res.robust / n, res.seconds);
    if (res.targeted)
        printf("target reached on %d of %d attacked samples\n", res.target_hits, res.targeted);

    int cdim, hdim, wdim;
    at_net_in_shape(net, &cdim, &hdim, &wdim);
    if (st) {
        float *lf = malloc(sizeof(float) * (size_t)n * 2);
        if (!lf) goto done;
        for (int i = 0; i < n; i++) {
            lf[i] = (float)labels[i];
            lf[n + i] = (float)adv_pred[i];
        }
        at_st_entry entries[4] = {
            {"x_adv", 4, {n, cdim, hdim, wdim}, adv},
            {"x", 4, {n, cdim, hdim, wdim}, x},
            {"labels", 1, {n}, lf},
            {"adv_pred", 1, {n}, lf + n},
        };
        char steps[32], restarts[32], seed[32], epsv[32], rob[32];
        snprintf(steps, sizeof steps, "%d", res.steps);
        snprintf(restarts, sizeof restarts, "%d", res.restarts);
        snprintf(seed, sizeof seed, "%llu", (unsigned long long)cfg.seed);
        snprintf(epsv, sizeof epsv, "%.9g", (double)eps[0]);
        snprintf(rob, sizeof rob, "%.6f", (double)res.robust / n);
        at_st_meta meta[] = {
            {"advtrain.attack", (char *)name},   {"advtrain.eps", epsv},
            {"advtrain.eps_scale", "0-1 pixels"}, {"advtrain.norm", cfg.norm == AT_NORM_L2 ? "l2" : "linf"},
            {"advtrain.steps", steps},           {"advtrain.restarts", restarts},
            {"advtrain.seed", seed},             {"advtrain.model", (char *)path},
            {"advtrain.data", (char *)data_source}, {"advtrain.robust_accuracy", rob},
        };
        s = at_st_write(out, entries, 4, meta, (int)(sizeof meta / sizeof *meta));
        free(lf);
        if (s != AT_OK) {
            cli_error("attack", "writing the examples", s);
            goto done;
        }
        printf("wrote %s: x_adv, x, labels, adv_pred (%d example%s, float32)\n", out, n, cli_s(n));
    } else {
        char labels_path[4300];
        if (!write_idx(out, x, adv, labels, n, cdim, hdim, wdim, labels_path, sizeof labels_path)) goto done;
        /* What the 8-bit file holds is what other tools will see: report its accuracy too. */
        int hits = 0;
        for (size_t i = 0; i < (size_t)n * D; i++) adv[i] = quantize(adv[i], x[i]) / 255.0f;
        for (int first = 0; first < n; first += 256) {
            int m = n - first < 256 ? n - first : 256;
            const float *z;
            if ((s = at_net_forward(net, adv + (size_t)first * D, m, &z)) != AT_OK) goto done;
            for (int i = 0; i < m; i++) {
                adv_pred[first + i] = at_argmax(z + (size_t)i * K, K);
                hits += adv_pred[first + i] == labels[first + i] && clean_pred[first + i] == labels[first + i];
            }
        }
        printf("wrote %s and %s (%d example%s, 8-bit pixels rounded towards the clean image; robust accuracy "
               "on them %.2f%%)\n", out, labels_path, n, cli_s(n), 100.0 * hits / n);
    }
    int rows = grid_rows < n ? grid_rows : n;
    char title[128], err[256];
    snprintf(title, sizeof title, "%s EPS %.4g %s", name, (double)eps[0], cfg.norm == AT_NORM_L2 ? "L2" : "LINF");
    const char *const *names = strncmp(data_source, "fashion-mnist", 13) == 0 && K == 10 ? FASHION_NAMES : NULL;
    float scale = cfg.norm == AT_NORM_LINF && eps[0] > 0 ? eps[0] : 0.0f;
    if (scale == 0.0f) {
        for (size_t i = 0; i < (size_t)rows * D; i++) {
            float d = fabsf(adv[i] - x[i]);
            scale = d > scale ? d : scale;
        }
        if (scale == 0.0f) scale = 1.0f;
    }
    if (!grid_write_png(grid_path, title, x, adv, labels, clean_pred, adv_pred, rows, cdim, hdim, wdim, scale, names,
                        err, sizeof err)) {
        fprintf(stderr, "advtrain attack: %s\n", err);
        goto done;
    }
    printf("wrote %s (%d sample%s: clean, perturbation, adversarial)\n", grid_path, rows, cli_s(rows));
    status = 0;
done:
    free(x);
    free(adv);
    free(labels);
    free(clean_pred);
    free(adv_pred);
    free(targets);
    at_net_free(net);
    at_st_free(file);
    at_data_free(&data);
    return status;
}
