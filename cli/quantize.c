/* advtrain quantize: post-training int8 quantization of a saved model (docs/quantization.md).
 * Calibrates on the first --calib training images, writes the int8 model file, and reports
 * float and int8 clean accuracy side by side on the test split. */
#include "attack_cli.h"
#include "cli.h"
#include "outpaths.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct quantize_options {
    const char *out, *data_source, *model_spec;
    int calib, samples, batch, threads;
    float percentile;
    bool json;
} quantize_options;

/* The default output: MODEL's name with ".safetensors" replaced by ".int8.safetensors". */
static void default_out(const char *path, char *out, size_t cap) {
    const char *ext = ".safetensors";
    size_t n = strlen(path), e = strlen(ext);
    if (n > e && strcmp(path + n - e, ext) == 0) n -= e;
    snprintf(out, cap, "%.*s.int8%s", (int)n, path, ext);
}

/* The first n training images as one float array, for calibration. */
static float *calibration_images(const at_dataset *train, int n) {
    const int D = at_dataset_sample_size(train);
    float *x = malloc(sizeof(float) * (size_t)n * D);
    if (x) at_dataset_range(train, 0, n, x, NULL, NULL);
    return x;
}

static void report(const char *path, const char *out, const atk_cli_model *m, const quantize_options *o, int n,
                   int fhits, int qhits) {
    struct stat st;
    const long bytes = stat(out, &st) == 0 ? (long)st.st_size : -1;
    const double fa = 100.0 * fhits / n, qa = 100.0 * qhits / n;
    if (o->json) {
        cJSON *j = atk_cli_json_head(path, m->net, m->data_source, "test", 0, n);
        cJSON_AddStringToObject(j, "int8_model", out);
        cJSON_AddNumberToObject(j, "int8_bytes", (double)bytes);
        cJSON_AddNumberToObject(j, "calibration_samples", o->calib);
        cJSON_AddNumberToObject(j, "qat_ranges", at_net_qat_ranges(m->net));
        cJSON_AddNumberToObject(j, "float_accuracy", fa / 100.0);
        cJSON_AddNumberToObject(j, "int8_accuracy", qa / 100.0);
        cli_print_json(j);
        return;
    }
    char how[48] = "min/max";
    if (o->percentile < 100.0f) snprintf(how, sizeof how, "percentile %g", (double)o->percentile);
    const int trained = at_net_qat_ranges(m->net);
    if (trained)
        printf("%s (%s): int8 with the activation ranges quantization-aware training left in the file (%d tensor%s); "
               "the rest calibrated on the first %d %s training images (%s)\n",
               path, at_net_spec(m->net), trained, cli_s(trained), o->calib, m->data.name, how);
    else
        printf("%s (%s): int8 by post-training quantization, calibrated on the first %d %s training images (%s)\n",
               path, at_net_spec(m->net), o->calib, m->data.name, how);
    printf("clean accuracy on %s test, first %d sample%s: float %.2f%%  int8 %.2f%%  (%+.2f points)\n", m->data.name,
           n, cli_s(n), fa, qa, qa - fa);
    printf("saved %s (%ld bytes)\n", out, bytes);
}

static int quantize_model(const char *path, const char *out, atk_cli_model *m, const quantize_options *o) {
    const at_dataset *train = &m->data.train, *test = m->ds;
    if (o->calib > train->n) {
        fprintf(stderr, "advtrain quantize: --calib %d: the %s training split has only %d images\n", o->calib,
                m->data.name, train->n);
        return EXIT_USAGE;
    }
    float *calib = calibration_images(train, o->calib);
    at_qnet *q = NULL;
    const at_quant_config qc = {o->percentile};
    at_status s = calib ? at_quantize(&q, m->net, calib, o->calib, &qc) : at_fail(AT_ERR_NOMEM, "out of memory");
    free(calib);
    const int n = o->samples > 0 && o->samples < test->n ? o->samples : test->n;
    if (s == AT_OK && n < test->n) s = at_dataset_truncate(m->ds, n); /* m->ds: the test split */
    at_eval_result fr, qr;
    if (s == AT_OK) s = at_evaluate(m->net, m->ds, o->batch, &fr);
    if (s == AT_OK) s = at_qnet_evaluate(q, m->ds, o->batch, &qr);
    const int fhits = s == AT_OK ? (int)lround((double)fr.accuracy * n) : 0;
    const int qhits = s == AT_OK ? (int)lround((double)qr.accuracy * n) : 0;
    char calib_text[96];
    if (at_net_qat_ranges(m->net))
        snprintf(calib_text, sizeof calib_text, "QAT ranges for %d tensors, the rest: %d training images, %s",
                 at_net_qat_ranges(m->net), o->calib, o->percentile < 100.0f ? "percentile" : "min/max");
    else if (o->percentile < 100.0f)
        snprintf(calib_text, sizeof calib_text, "%d training images, percentile %g", o->calib, (double)o->percentile);
    else
        snprintf(calib_text, sizeof calib_text, "%d training images, min/max", o->calib);
    at_st_meta meta[3] = {{"advtrain.data", (char *)m->data_source},
                          {"advtrain.float_model", (char *)path},
                          {"advtrain.calibration", calib_text}};
    if (s == AT_OK) s = at_qnet_save(q, out, meta, 3);
    at_qnet_free(q);
    if (s != AT_OK) {
        cli_error("quantize", path, s);
        return s == AT_ERR_ARG ? EXIT_USAGE : EXIT_RUN_FAILED;
    }
    report(path, out, m, o, n, fhits, qhits);
    return 0;
}

int cmd_quantize(int argc, char **argv) {
    quantize_options o = {.calib = 1000, .batch = 256, .percentile = 100.0f};
    cli_option opts[] = {
        {"out", OPT_STRING, &o.out, "FILE", "the int8 model file (default: MODEL.int8.safetensors)", 1, 0},
        {"calib", OPT_INT, &o.calib, "N", "calibrate on the first N training images (default 1000)", 1, 10000000},
        {"percentile", OPT_FLOAT, &o.percentile, "P", "activation ranges from the P-th percentiles of the calibration values (e.g. 99.99; default 100: min and max)", 50, 100},
        CLI_OPTS_MODEL_FILE(&o.data_source, &o.model_spec),
        {"samples", OPT_INT, &o.samples, "N", "compare accuracies on the first N test samples (default all)", 1, 100000000},
        {"batch", OPT_INT, &o.batch, "N", "evaluation batch size (default 256)", 1, 65536},
        CLI_OPT_THREADS(&o.threads),
        CLI_OPT_JSON(&o.json),
    };
    const char *positional[1] = {NULL};
    cli_command cmd = {"quantize", "advtrain quantize MODEL.safetensors [--out FILE] [--calib N] [--data SOURCE]",
                       "Post-training int8 quantization (the TFLite Micro / CMSIS-NN scheme: per-channel int8\n"
                       "weights, per-tensor int8 activations, int32 biases, fixed-point requantization,\n"
                       "BatchNorm folded). Writes the int8 model and compares float and int8 clean accuracy.\n"
                       "See docs/quantization.md.",
                       opts, (int)(sizeof opts / sizeof *opts), positional, 1, 0};
    int early = cli_start(&cmd, argc, argv);
    if (early >= 0) return early;
    if (o.threads > 0) at_set_threads(o.threads);
    const char *path = positional[0];
    char derived[4096];
    if (!o.out) {
        default_out(path, derived, sizeof derived);
        o.out = derived;
    }
    if (strcmp(o.out, path) == 0) {
        fprintf(stderr, "advtrain quantize: --out %s is the float model itself: name another file\n", o.out);
        return EXIT_USAGE;
    }
    int bad = out_check_file("quantize", "--out", o.out);
    if (bad) return bad;
    atk_cli_model m;
    int rc = EXIT_RUN_FAILED;
    if (atk_cli_open("quantize", &m, path, o.data_source, o.model_spec, "test", false)) rc = quantize_model(path, o.out, &m, &o);
    atk_cli_close(&m);
    return rc;
}
