/* advtrain export: a saved model as standalone C99 source (docs/export.md). */
#include "attack_cli.h"
#include "cli.h"
#include "outpaths.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* The default prefix: the model file's name without directory and extension, with every
 * character that cannot appear in a C identifier replaced by '_' ("seed-cnn.safetensors" ->
 * "seed_cnn"); "model_" goes in front of a leading digit. */
static void prefix_from_path(const char *path, char *out, size_t cap) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t len = strlen(base);
    const char *dot = strrchr(base, '.');
    if (dot && dot != base) len = (size_t)(dot - base);
    size_t n = 0;
    if (len == 0 || isdigit((unsigned char)base[0])) n = (size_t)snprintf(out, cap, "model%s", len ? "_" : "");
    for (size_t i = 0; i < len && n + 1 < cap && n < 64; i++) {
        unsigned char c = (unsigned char)base[i];
        out[n++] = (char)(c < 128 && (isalnum(c) || c == '_') ? c : '_');
    }
    out[n] = '\0';
}

/* The prefix is checked before anything loads: a bad one is a usage error. */
static bool prefix_ok(const char *prefix) {
    bool ok = (isalpha((unsigned char)prefix[0]) || prefix[0] == '_') && strlen(prefix) <= 64;
    for (const char *c = prefix; ok && *c; c++) ok = (unsigned char)*c < 128 && (isalnum((unsigned char)*c) || *c == '_');
    if (!ok)
        fprintf(stderr,
                "advtrain export: --prefix %s: not a C identifier (letters, digits and '_', not starting with a "
                "digit, at most 64 characters)\n",
                prefix);
    return ok;
}

typedef struct export_options {
    const char *path, *dir, *prefix, *data, *onnx;
    bool int8;
    int golden;
} export_options;

static int export_onnx(const export_options *o, const at_net *net) {
    at_status s = at_export_onnx(net, o->onnx);
    if (s != AT_OK) {
        cli_error("export", "cannot write the ONNX model", s);
        return s == AT_ERR_ARG ? EXIT_USAGE : EXIT_RUN_FAILED;
    }
    int c, h, w;
    at_net_in_shape(net, &c, &h, &w);
    printf("wrote %s: ONNX (IR 7, opset 13), input \"input\" [batch, %d, %d, %d] float, output \"logits\" [batch, %d]\n",
           o->onnx, c, h, w, at_net_out_size(net));
    return 0;
}

static int export_float(const export_options *o) {
    at_net *net = NULL;
    at_status s = at_model_load(&net, o->path, NULL);
    if (s != AT_OK) {
        cli_error("export", "cannot load the model", s);
        return EXIT_RUN_FAILED;
    }
    const int rc = o->onnx ? export_onnx(o, net) : 0;
    if (rc || !o->dir) {
        at_net_free(net);
        return rc;
    }
    s = at_export_c(net, o->dir, o->prefix);
    if (s != AT_OK) {
        cli_error("export", "cannot write the C files", s);
        at_net_free(net);
        return s == AT_ERR_ARG ? EXIT_USAGE : EXIT_RUN_FAILED;
    }
    int c, h, w;
    at_net_in_shape(net, &c, &h, &w);
    const char *dir = o->dir, *prefix = o->prefix, *sep = dir[strlen(dir) - 1] == '/' ? "" : "/";
    printf("wrote %s%s%s.h and %s%s%s.c: %s, input %dx%dx%d, %d outputs, %zu parameters (%.1f KiB "
           "of const data)\n",
           dir, sep, prefix, dir, sep, prefix, *at_net_spec(net) ? at_net_spec(net) : "model", c, h,
           w, at_net_out_size(net), at_net_num_params(net),
           (double)at_net_num_params(net) * sizeof(float) / 1024.0);
    printf("use: #include \"%s.h\", then %s_predict(input, logits) returns the class; "
           "cc -std=c99 -O2 -c %s%s%s.c\n",
           prefix, prefix, dir, sep, prefix);
    at_net_free(net);
    return 0;
}

/* The first n test samples of the model's data as floats (golden vectors), or NULL with *rc. */
static float *golden_samples(const export_options *o, const atk_cli_model *m, int *rc) {
    *rc = EXIT_USAGE;
    if (o->golden > m->ds->n) {
        fprintf(stderr, "advtrain export: --golden %d: the %s test split has only %d samples\n", o->golden,
                m->data_source, m->ds->n);
        return NULL;
    }
    const at_net *net = at_qnet_net(m->qnet);
    int c, h, w;
    at_net_in_shape(net, &c, &h, &w);
    if (at_dataset_sample_size(m->ds) != c * h * w) {
        fprintf(stderr, "advtrain export: %s's samples are not the model's %dx%dx%d input\n", m->data_source, c, h, w);
        return NULL;
    }
    float *x = malloc(sizeof(float) * (size_t)o->golden * (size_t)(c * h * w));
    *rc = EXIT_RUN_FAILED;
    if (!x) fprintf(stderr, "advtrain export: out of memory for %d golden samples\n", o->golden);
    else at_dataset_range(m->ds, 0, o->golden, x, NULL, NULL);
    return x;
}

static void print_int8_summary(const export_options *o, const at_int8_export_info *info) {
    const char *dir = o->dir, *P = o->prefix, *sep = dir[strlen(dir) - 1] == '/' ? "" : "/";
    printf("wrote %s%s%s.h and %s%s%s.c%s%s%s%s%s: int8, integer arithmetic only, %d kernel calls\n", dir, sep, P, dir,
           sep, P, o->golden ? " and " : "", o->golden ? dir : "", o->golden ? sep : "", o->golden ? P : "",
           o->golden ? "_golden.c" : "", info->layers);
    printf("flash: %zu bytes of constants (weights, biases, multipliers, layer tables; 32-bit target) + code\n",
           info->const_bytes);
    printf("RAM: %zu bytes of scratch (+ the int8 input, %s_predict's static buffer)\n", info->scratch_bytes, P);
    printf("MACs per inference: %" PRIu64 "\n", info->macs);
    char upper[80];
    size_t i = 0;
    for (; P[i] && i + 1 < sizeof upper; i++) upper[i] = (char)toupper((unsigned char)P[i]);
    upper[i] = '\0';
    if (o->golden)
        printf("check a build: cc -std=c99 -O2 -D%s_GOLDEN_MAIN %s%s%s.c %s%s%s_golden.c && ./a.out\n", upper, dir,
               sep, P, dir, sep, P);
}

/* The int8 model, and with --golden the data it was trained on (or --data). */
static bool open_int8(const export_options *o, atk_cli_model *m) {
    if (o->golden) return atk_cli_open("export", m, o->path, o->data, NULL, "test", true);
    memset(m, 0, sizeof *m);
    at_status s = at_qnet_load(&m->qnet, o->path, NULL);
    if (s != AT_OK) cli_error("export", "cannot load the int8 model", s);
    return s == AT_OK;
}

static int export_int8_onnx(const export_options *o, const at_qnet *q) {
    at_status s = at_qnet_export_onnx(q, o->onnx);
    if (s != AT_OK) {
        cli_error("export", "cannot write the ONNX model", s);
        return EXIT_RUN_FAILED;
    }
    printf("wrote %s: ONNX (IR 7, opset 13), int8 as QuantizeLinear/DequantizeLinear, input \"input\" float, "
           "output \"logits\" (the dequantized int8 logits)\n", o->onnx);
    return 0;
}

static int export_int8_c(const export_options *o, const atk_cli_model *m) {
    int rc = 0;
    float *golden = o->golden ? golden_samples(o, m, &rc) : NULL;
    if (o->golden && !golden) return rc;
    at_int8_export_info info;
    at_status s = at_qnet_export_c(m->qnet, o->dir, o->prefix, golden, o->golden, &info);
    free(golden);
    if (s != AT_OK) {
        cli_error("export", "cannot write the C files", s);
        return s == AT_ERR_ARG ? EXIT_USAGE : EXIT_RUN_FAILED;
    }
    print_int8_summary(o, &info);
    return 0;
}

static int export_int8(const export_options *o) {
    atk_cli_model m;
    int rc = open_int8(o, &m) ? 0 : EXIT_RUN_FAILED;
    if (!rc && o->onnx) rc = export_int8_onnx(o, m.qnet);
    if (!rc && o->dir) rc = export_int8_c(o, &m);
    atk_cli_close(&m);
    return rc;
}

/* Whether the file at path is an int8 model (advtrain quantize); -1: unreadable (reported). */
static int file_is_int8(const char *path) {
    at_st_file *f;
    at_status s = at_st_read(path, &f);
    if (s != AT_OK) {
        cli_error("export", "cannot read the model", s);
        return -1;
    }
    const char *format = at_st_meta_get(f, "advtrain.format");
    const int int8 = format && strcmp(format, "int8") == 0;
    at_st_free(f);
    return int8;
}

int cmd_export(int argc, char **argv) {
    export_options o = {0};
    cli_option opts[] = {
        {"c", OPT_STRING, &o.dir, "DIR", "write DIR/PREFIX.h and DIR/PREFIX.c: standalone C99 inference (created if missing)", 1, 0},
        {"onnx", OPT_STRING, &o.onnx, "FILE", "write FILE: the model in ONNX (opset 13), for ONNX Runtime, Netron and the converters", 1, 0},
        {"prefix", OPT_STRING, &o.prefix, "NAME", "C identifier in front of every generated name (default: from the model file's name)", 1, 0},
        {"int8", OPT_FLAG, &o.int8, NULL, "require an int8 model file (advtrain quantize): integer-only C; an int8 file exports so without it", 1, 0},
        {"golden", OPT_INT, &o.golden, "N", "int8: also write DIR/PREFIX_golden.c, the first N test samples and advtrain's int8 logits for them, to check a build on its target", 0, 100000},
        {"data", OPT_STRING, &o.data, "SOURCE", "where --golden's test samples come from (default: the data the model was trained on)", 1, 0},
    };
    const char *positional[1] = {NULL};
    cli_command cmd = {"export", "advtrain export MODEL.safetensors (--c DIR [--prefix NAME] [--golden N] | --onnx FILE)",
                       "Export a saved model as standalone C99 source for microcontrollers: the weights as\n"
                       "const arrays and one inference function, no allocation, no dependency (Tanh and\n"
                       "Sigmoid need libm). Its logits match advtrain eval's. An int8 model file (advtrain\n"
                       "quantize) exports as integer-only C with the library's own int8 kernels: the same\n"
                       "bits as advtrain's int8 inference on any target. --onnx writes an ONNX model.\n"
                       "See docs/export.md.",
                       opts, (int)(sizeof opts / sizeof *opts), positional, 1, 0};
    int early = cli_start(&cmd, argc, argv);
    if (early >= 0) return early;
    if (!o.dir && !o.onnx) {
        fprintf(stderr, "advtrain export: say what to write: --c DIR (C files) or --onnx FILE (usage: %s)\n", cmd.usage);
        return EXIT_USAGE;
    }
    if (o.golden && !o.dir) {
        fprintf(stderr, "advtrain export: --golden %d: golden vectors go with the C files; add --c DIR\n", o.golden);
        return EXIT_USAGE;
    }
    o.path = positional[0];
    char derived[80];
    if (!o.prefix) {
        prefix_from_path(o.path, derived, sizeof derived);
        o.prefix = derived;
    }
    if (!prefix_ok(o.prefix)) return EXIT_USAGE;
    int bad = o.dir ? out_check_dir("export", "--c", o.dir) : 0;
    if (!bad && o.onnx) bad = out_check_file("export", "--onnx", o.onnx);
    if (bad) return bad;
    const int int8 = file_is_int8(o.path);
    if (int8 < 0) return EXIT_RUN_FAILED;
    if (!int8 && (o.int8 || o.golden)) {
        fprintf(stderr, "advtrain export: %s: %s is a float model; quantize it first (advtrain quantize %s), then "
                        "export the int8 file\n", o.int8 ? "--int8" : "--golden", o.path, o.path);
        return EXIT_USAGE;
    }
    return int8 ? export_int8(&o) : export_float(&o);
}
