# Included by CMake right after llama.cpp's own project() call while pip builds
# llama-cpp-python (scripts/bootstrap passes it as CMAKE_PROJECT_llama.cpp_INCLUDE).
#
# llama-cpp-python's CMakeLists forces LLAMA_BUILD_COMMON on, but the Python
# bindings load only libllama and libggml*: the common library (argument
# parsing, chat templates, JSON schema; 42 % of the build's CPU time) serves
# llama.cpp's own tools. Turning it off here, before llama.cpp reads the
# option, leaves libllama and libggml* exactly as they are built otherwise
# (same flags, GGML_NATIVE: the host's instruction set). docs/benchmarks.md,
# "First set-up", has the measurements.
set(LLAMA_BUILD_COMMON OFF CACHE BOOL "llama.cpp's common library (unused by the Python bindings)" FORCE)
