/* advtrain eval: accuracy (or MSE) of a saved model on a test set. */
#include "cli.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

int cmd_eval(int argc, char **argv) {
    const char *data_source = NULL, *model_spec = NULL, *split = "test";
    int batch = 256, threads = 0, samples = 0;
    bool json = false;
    cli_option opts[] = {
        {"data", OPT_STRING, &data_source, "SOURCE", "dataset (default: the one the model was trained on)", 1, 0},
        {"model", OPT_STRING, &model_spec, "NAME|SPEC", "architecture, for weight files without advtrain metadata (e.g. written by PyTorch)", 1, 0},
        {"split", OPT_STRING, &split, "test|train", "which split to evaluate (default test)", 1, 0},
        {"samples", OPT_INT, &samples, "N", "evaluate the first N samples only", 1, 100000000},
        {"batch", OPT_INT, &batch, "N", "evaluation batch size (default 256)", 1, 65536},
        {"threads", OPT_INT, &threads, "N", "compute threads (default: all cores)", 1, 1024},
        {"json", OPT_FLAG, &json, NULL, "print one JSON object on stdout", 1, 0},
    };
    const char *positional[1] = {NULL};
    cli_command cmd = {"eval", "advtrain eval MODEL.safetensors [--data SOURCE] [--json]",
                       "Evaluate a saved model: accuracy (classification) or MSE (regression).",
                       opts, (int)(sizeof opts / sizeof *opts), positional, 1, 0};
    bool help;
    if (!cli_parse(&cmd, argc, argv, &help)) return EXIT_USAGE;
    if (help) {
        cli_print_help(&cmd, stdout);
        return 0;
    }
    if (cmd.npositional != 1) {
        fprintf(stderr, "advtrain eval: which model? usage: %s\n", cmd.usage);
        return EXIT_USAGE;
    }
    if (strcmp(split, "test") != 0 && strcmp(split, "train") != 0) {
        fprintf(stderr, "advtrain eval: --split %s: use test or train\n", split);
        return EXIT_USAGE;
    }
    const char *path = positional[0];
    if (threads > 0) at_set_threads(threads);

    at_net *net = NULL;
    at_st_file *file = NULL;
    at_data data;
    memset(&data, 0, sizeof data);
    int status = EXIT_RUN_FAILED;
    at_status s = at_st_read(path, &file);
    if (s != AT_OK) {
        cli_error("eval", "cannot read the model", s);
        return EXIT_RUN_FAILED;
    }
    if (!data_source) data_source = at_st_meta_get(file, "advtrain.data");
    if (!data_source) data_source = "fashion-mnist";
    if (!cli_load_data("eval", &data, data_source)) goto done;
    at_dataset *ds = strcmp(split, "train") == 0 ? &data.train : &data.test;
    if (samples > 0 && samples < ds->n && (s = at_dataset_truncate(ds, samples)) != AT_OK) {
        cli_error("eval", "selecting samples", s);
        goto done;
    }
    if (model_spec) {
        s = at_net_from_spec(&net, model_spec, ds->c, ds->h, ds->w);
        if (s == AT_OK) s = at_net_load_weights(net, file, path);
    } else {
        s = at_model_load(&net, path, NULL);
    }
    if (s != AT_OK) {
        cli_error("eval", "cannot load the model", s);
        goto done;
    }
    at_eval_result r;
    double start = cli_now();
    if ((s = at_evaluate(net, ds, batch, &r)) != AT_OK) {
        cli_error("eval", "evaluation failed", s);
        goto done;
    }
    double seconds = cli_now() - start;
    bool regression = ds->targets != NULL;
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "model", path);
        cJSON_AddStringToObject(o, "arch", at_net_spec(net));
        cJSON_AddStringToObject(o, "data", data_source);
        cJSON_AddStringToObject(o, "split", split);
        cJSON_AddNumberToObject(o, "samples", r.samples);
        if (regression)
            cJSON_AddNumberToObject(o, "mse", r.mse);
        else
            cJSON_AddNumberToObject(o, "clean_accuracy", r.accuracy);
        cJSON_AddNumberToObject(o, "loss", r.loss);
        cJSON_AddNumberToObject(o, "seconds", seconds);
        char *text = cJSON_PrintUnformatted(o);
        printf("%s\n", text ? text : "{}");
        free(text);
        cJSON_Delete(o);
    } else if (regression) {
        printf("%s on %s %s (%d samples): mse %.5f\n", path, data.name, split, r.samples,
               (double)r.mse);
    } else {
        printf("%s on %s %s (%d samples): accuracy %.2f%%  loss %.4f\n", path, data.name, split,
               r.samples, 100.0 * r.accuracy, (double)r.loss);
    }
    status = 0;
done:
    at_net_free(net);
    at_st_free(file);
    at_data_free(&data);
    return status;
}
