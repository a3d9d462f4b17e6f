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
