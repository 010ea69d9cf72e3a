/* The buffer plan (src/graph/plan.c) of resnet8, the model whose memory issue 20 bounds (peak
 * RSS of its training under 150 MB):
 *  - the five tensors no backward reads (each residual branch's last BatchNorm, the two 1x1
 *    shortcuts) live in gradient slots, not in the activation arena; every other tensor has
 *    its own rows in the arena, and none of those overlap;
 *  - a tensor some backward reads (a BatchNorm input, a fused ReLU's output) never lives in a
 *    slot;
 *  - the arena at batch 128 is the sum of the other tensors, the slots three of the widest;
 *  - a prediction of 128 samples takes its slots from the arena, one of 512 its own.
 * Mutation check: making forward_only() return true for every tensor fails the second point. */
#include "graph/net_internal.h"
#include "testutil.h"

#include <stdlib.h>

static void test_resnet8_plan(void) {
    at_net *net = NULL;
    CHECK_OK(at_net_from_spec(&net, "resnet8", 1, 28, 28));
    if (!net) return;
    at_net_init(net, 1);
    at_set_threads(2);
    CHECK_OK(at_net_reserve(net, 128));
    const at_plan *P = &net->plan;
    int in_slots = 0;
    size_t own = 0;
    for (int l = 0; l < net->nlayers; l++) {
        const at_layer *L = &net->layers[l];
        if (L->fused) continue;
        if (P->fwd_slot[l] >= 0) {
            in_slots++;
            CHECK_MSG(!L->relu_out, "%s lives in a slot but gates a fused ReLU", L->d.name);
            CHECK(P->slot_width[P->fwd_slot[l]] >= L->out_size);
            CHECK(at_tensor_stride(net, l) == P->slot_width[P->fwd_slot[l]]);
            CHECK(net->act[l] == net->grad[P->fwd_slot[l]]);
        } else {
            CHECK(net->act[l] >= net->arena && net->act[l] + (size_t)128 * L->out_size <=
                                                   net->arena + net->arena_floats);
            own += ((size_t)128 * L->out_size + 15) / 16 * 16;
        }
        /* Read by a backward: BatchNorm's input (its x), a convolution's input, a gate. */
        for (int r = l + 1; r < net->nlayers; r++) {
            const at_layer *R = &net->layers[r];
            for (int i = 0; !R->fused && i < R->nsrc; i++)
                if (R->src[i] == l && R->d.kind != AT_LAYER_ADD)
                    CHECK_MSG(P->fwd_slot[l] < 0, "%s is read by %s's backward but lives in a slot",
                              L->d.name, R->d.name);
        }
    }
    CHECK_MSG(in_slots == 5, "resnet8: %d forward-only tensors in slots, want 5", in_slots);
    CHECK(own == net->arena_floats);
    /* Arena tensors do not overlap: their starts are distinct and ordered by layer. */
    const float *prev_end = net->arena;
    for (int l = 0; l < net->nlayers; l++) {
        if (net->layers[l].fused || P->fwd_slot[l] >= 0) continue;
        CHECK(net->act[l] >= prev_end);
        prev_end = net->act[l] + (size_t)128 * net->layers[l].out_size;
    }
    CHECK(P->nslots == 3);
    /* 58 MB of activations and 19 MB of gradient slots at batch 128 (were 74 MB and 19 MB). */
    const double mb = 4.0 * (double)net->arena_floats / 1e6;
    CHECK_MSG(mb < 60.0, "resnet8 activations at batch 128: %.1f MB", mb);

    float *x = calloc((size_t)512 * 784, sizeof(float));
    const float *logits = NULL;
    at_net_set_training(net, false);
    CHECK_OK(at_net_predict(net, x, 128, &logits));
    CHECK(net->infer_in_arena);
    CHECK_OK(at_net_predict(net, x, 512, &logits));
    CHECK(!net->infer_in_arena);
    free(x);
    at_net_free(net);
}

int main(void) {
    test_resnet8_plan();
    return tu_finish("test_plan");
}
