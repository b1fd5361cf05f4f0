/*
 * STUB, for tests only: stands in for libnvinfer, libnvonnxparser and libnvinfer_plugin
 * (TensorRT 10.x and 11.x), whose real builds come only from NVIDIA's index and need a GPU.
 *
 * It exports just the entry points the Python bindings (tensorrt_bindings/tensorrt.so) link
 * against, so that `import tensorrt` succeeds and the real enums, classes, attributes and
 * docstrings can be read. Every factory returns NULL: creating a Builder or Runtime fails,
 * as it would without a GPU. Nothing here builds or runs an engine.
 */
#include <stddef.h>

void *createInferBuilder_INTERNAL(void *logger, int version) { return NULL; }
void *createInferRefitter_INTERNAL(void *engine, void *logger, int version) { return NULL; }
void *createInferRuntime_INTERNAL(void *logger, int version) { return NULL; }
void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version) { return NULL; }
void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int version) { return NULL; }
int getNvOnnxParserVersion(void) { return 0; }
void *getPluginRegistry(void) { return NULL; }
void *getBuilderPluginRegistry(int capability) { return NULL; }
int initLibNvInferPlugins(void *logger, const char *libNamespace) { return 0; }
