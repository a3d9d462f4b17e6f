# protoc-c code generation into the build tree (never the source tree).
set(SC_PROTO_GEN ${CMAKE_BINARY_DIR}/gen)
file(MAKE_DIRECTORY ${SC_PROTO_GEN})
# sc_protoc_c(<out-var> <proto-root> <file.proto>...) appends generated .c files.
function(sc_protoc_c out_srcs proto_root)
  set(srcs)
  foreach(p IN LISTS ARGN)
    string(REGEX REPLACE "\\.proto$" "" base ${p})
    add_custom_command(
      OUTPUT ${SC_PROTO_GEN}/${base}.pb-c.c ${SC_PROTO_GEN}/${base}.pb-c.h
      COMMAND ${PROTOC_C} -I${proto_root} --c_out=${SC_PROTO_GEN} ${p}
      DEPENDS ${proto_root}/${p} VERBATIM)
    list(APPEND srcs ${SC_PROTO_GEN}/${base}.pb-c.c)
  endforeach()
  set(${out_srcs} ${srcs} PARENT_SCOPE)
endfunction()
