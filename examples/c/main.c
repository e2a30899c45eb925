/* A C host for a model compiled by bnc.
 *
 *   bnc examples/tiny.nn -o model.o --symbol-prefix model   # writes model.o and model.h
 *   cc -I. examples/c/main.c model.o -o app
 *   ./app [input.f32]                                       # prints every output value
 *
 * The input file holds the first input's values as raw little-endian float32, row-major
 * (numpy: x.astype('<f4').tofile('input.f32')); without one, every input value is 0.5.
 * Models with several inputs or outputs: see model.h for MODEL_INPUTi_LEN / MODEL_OUTPUTi_LEN.
 */
#include <stdio.h>
#include <stdlib.h>

#include "model.h"

int main(int argc, char **argv) {
    float *input = malloc(sizeof(float) * MODEL_INPUT0_LEN);
    float *output = malloc(sizeof(float) * MODEL_OUTPUT0_LEN);
    void *workspace = malloc(model_workspace_size());
    if (!input || !output || !workspace) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    if (argc > 1) {
        FILE *f = fopen(argv[1], "rb");
        if (!f) {
            perror(argv[1]);
            return 1;
        }
        size_t got = fread(input, sizeof(float), MODEL_INPUT0_LEN, f);
        fclose(f);
        if (got != MODEL_INPUT0_LEN) {
            fprintf(stderr, "%s: expected %d float32 values, read %zu\n", argv[1],
                    MODEL_INPUT0_LEN, got);
            return 1;
        }
    } else {
        for (size_t i = 0; i < MODEL_INPUT0_LEN; i++) input[i] = 0.5f;
    }
    const float *inputs[MODEL_NUM_INPUTS] = {input};
    float *outputs[MODEL_NUM_OUTPUTS] = {output};
    if (model_forward(inputs, outputs, workspace) != 0) {
        fprintf(stderr, "model_forward failed\n");
        return 1;
    }
    for (size_t i = 0; i < MODEL_OUTPUT0_LEN; i++) printf("%.9g\n", output[i]);
    free(input);
    free(output);
    free(workspace);
    return 0;
}
