/* advtrain export: a saved model as standalone C99 source (docs/export.md). */
#include "cli.h"
#include "outpaths.h"

#include <ctype.h>
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

int cmd_export(int argc, char **argv) {
    const char *dir = NULL, *prefix = NULL;
    cli_option opts[] = {
        {"c", OPT_STRING, &dir, "DIR", "write DIR/PREFIX.h and DIR/PREFIX.c: standalone C99 inference (created if missing)", 1, 0},
        {"prefix", OPT_STRING, &prefix, "NAME", "C identifier in front of every generated name (default: from the model file's name)", 1, 0},
    };
    const char *positional[1] = {NULL};
    cli_command cmd = {"export", "advtrain export MODEL.safetensors --c DIR [--prefix NAME]",
                       "Export a saved model as standalone C99 source for microcontrollers: the weights as\n"
                       "const arrays and one inference function, no allocation, no dependency (Tanh and\n"
                       "Sigmoid need libm). Its logits match advtrain eval's. See docs/export.md.",
                       opts, (int)(sizeof opts / sizeof *opts), positional, 1, 0};
    int early = cli_start(&cmd, argc, argv);
    if (early >= 0) return early;
    if (!dir) {
        fprintf(stderr, "advtrain export: say where to write the C files with --c DIR (usage: %s)\n",
                cmd.usage);
        return EXIT_USAGE;
    }
    const char *path = positional[0];
    char derived[80];
    if (!prefix) {
        prefix_from_path(path, derived, sizeof derived);
        prefix = derived;
    }
    /* Check the prefix before loading anything: a bad one is a usage error. */
    {
        bool ok = (isalpha((unsigned char)prefix[0]) || prefix[0] == '_') && strlen(prefix) <= 64;
        for (const char *c = prefix; ok && *c; c++)
            ok = (unsigned char)*c < 128 && (isalnum((unsigned char)*c) || *c == '_');
        if (!ok) {
            fprintf(stderr,
                    "advtrain export: --prefix %s: not a C identifier (letters, digits and '_', not "
                    "starting with a digit, at most 64 characters)\n",
                    prefix);
            return EXIT_USAGE;
        }
    }
    int bad = out_check_dir("export", "--c", dir);
    if (bad) return bad;
    at_net *net = NULL;
    at_status s = at_model_load(&net, path, NULL);
    if (s != AT_OK) {
        cli_error("export", "cannot load the model", s);
        return EXIT_RUN_FAILED;
    }
    s = at_export_c(net, dir, prefix);
    if (s != AT_OK) {
        cli_error("export", "cannot write the C files", s);
        at_net_free(net);
        return s == AT_ERR_ARG ? EXIT_USAGE : EXIT_RUN_FAILED;
    }
    int c, h, w;
    at_net_in_shape(net, &c, &h, &w);
    const char *sep = dir[strlen(dir) - 1] == '/' ? "" : "/";
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
