# -DSC_ASAN=ON: AddressSanitizer + UndefinedBehaviorSanitizer, no recovery
# (redis' and libuv's sanitizer options). Applies to every target in the tree.
if(SC_ASAN)
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()
# -DSC_FUZZ=ON builds tests/fuzz targets with libFuzzer (clang only).
if(SC_FUZZ AND NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "SC_FUZZ needs clang: cmake -DCMAKE_C_COMPILER=clang -DSC_FUZZ=ON")
endif()
# Coverage instrumentation for all code (libraries included), so libFuzzer
# sees the edges of the parsers it targets, not only of the fuzz_*.c file;
# the fuzz executables themselves add -fsanitize=fuzzer (libFuzzer's main).
# Linking with it too pulls in libFuzzer's runtime without its main(), which
# the non-fuzz executables of a fuzz build need for the coverage callbacks.
if(SC_FUZZ)
  add_compile_options(-fsanitize=fuzzer-no-link)
  add_link_options(-fsanitize=fuzzer-no-link)
endif()
