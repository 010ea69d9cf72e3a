/* Fuzz target: int8 model files (at_qnet_load, src/quant/qfile.c). The metadata's architecture
 * builds the graph; every tensor scale, zero point, int8 weight, bias, multiplier and shift is
 * checked against what the kernels assume. A model that loaded runs once on a mid-grey sample
 * when small: no input of the file may make the integer kernels read or write out of bounds or
 * overflow (UBSan). */
#include "fuzz_common.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[512];
    fuzz_path(path, sizeof path, "model.int8.safetensors");
    fuzz_write(path, data, size);
    at_qnet *q = NULL;
    at_st_file *meta = NULL;
    at_status s = at_qnet_load(&q, path, &meta);
    fuzz_check_message(s, "at_qnet_load");
    if (s != AT_OK) {
        if (q || meta) fuzz_fail("at_qnet_load failed but returned a network or file", NULL);
        return 0;
    }
    const at_net *net = at_qnet_net(q);
    if (strcmp(at_net_spec(net), at_st_meta_get(meta, "advtrain.arch")) != 0)
        fuzz_fail("the network's spec is not the file's", at_net_spec(net));
    if (fuzz_sample_floats(net) <= (1 << 18) && at_net_num_params(net) <= ((size_t)1 << 20)) {
        float *x = calloc((size_t)at_net_in_size(net), sizeof *x);
        if (!x) fuzz_fail("out of memory", "input sample");
        for (int i = 0; i < at_net_in_size(net); i++) x[i] = 0.5f;
        const int8_t *z = NULL;
        s = at_qnet_forward(q, x, 1, &z);
        fuzz_check_message(s, "at_qnet_forward");
        if (s != AT_OK && s != AT_ERR_NOMEM) fuzz_fail("at_qnet_forward failed", at_error_message());
        volatile int sum = 0;
        for (int i = 0; s == AT_OK && i < at_net_out_size(net); i++) sum += z[i];
        (void)sum;
        free(x);
    }
    at_qnet_free(q);
    at_st_free(meta);
    return 0;
}
