# Warnings are set per target (sc_target_warnings) so generated protobuf-c code
# and third-party headers stay quiet (BoringSSL's CMakeLists does the same).
set(SC_WARNINGS -Wall -Wextra -Wshadow -Wformat=2 -Wstrict-prototypes
    -Wold-style-definition -Wmissing-prototypes -Wvla -Wwrite-strings
    -Wimplicit-fallthrough -Wpointer-arith -Wundef -Wno-unused-parameter)
function(sc_target_warnings tgt)
  target_compile_options(${tgt} PRIVATE ${SC_WARNINGS})
  if(SC_WERROR)
    target_compile_options(${tgt} PRIVATE -Werror)
  endif()
endfunction()
