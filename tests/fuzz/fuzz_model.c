/* Fuzz target: model files (at_model_load). The metadata's architecture (advtrain.arch) and
 * input shape (advtrain.input) build the network, whose weights then load from the tensors; a
 * network that loaded is described and, when small, run once on a zero sample. */
#include "fuzz_common.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[512];
    fuzz_path(path, sizeof path, "model.safetensors");
    fuzz_write(path, data, size);
    at_net *net = NULL;
    at_st_file *meta = NULL;
    at_status s = at_model_load(&net, path, &meta);
    fuzz_check_message(s, "at_model_load");
    if (s != AT_OK) {
        if (net || meta) fuzz_fail("at_model_load failed but returned a network or file", NULL);
        return 0;
    }
    if (strcmp(at_net_spec(net), at_st_meta_get(meta, "advtrain.arch")) != 0)
        fuzz_fail("the network's spec is not the file's", at_net_spec(net));
    char text[8192];
    s = at_net_describe(net, text, sizeof text);
    fuzz_check_message(s, "at_net_describe");
    fuzz_predict_small(net);
    at_net_free(net);
    at_st_free(meta);
    return 0;
}
