# Dependencies, all from Debian 12 packages (see docs/ARCHITECTURE.md "Dependencies").
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)

# BoringSSL from android-libboringssl-dev. It has no pkg-config/CMake files and
# OpenSSL 3 (libssl-dev) may sit in the default paths with the same symbol names:
# NO_DEFAULT_PATH makes sure we never pick it up. SC_BORINGSSL_ROOT points a
# production build at a self-built BoringSSL tree instead.
set(SC_BORINGSSL_ROOT "" CACHE PATH "Self-built BoringSSL tree (include/, lib/); empty = Debian android-libboringssl")
if(SC_BORINGSSL_ROOT)
  set(_bssl_inc ${SC_BORINGSSL_ROOT}/include)
  set(_bssl_lib ${SC_BORINGSSL_ROOT}/lib ${SC_BORINGSSL_ROOT}/build ${SC_BORINGSSL_ROOT}/build/ssl ${SC_BORINGSSL_ROOT}/build/crypto)
else()
  set(_bssl_inc /usr/include/android)
  set(_bssl_lib /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/android /usr/lib/x86_64-linux-gnu/android)
endif()
find_path(BSSL_INCLUDE_DIR openssl/is_boringssl.h PATHS ${_bssl_inc} NO_DEFAULT_PATH REQUIRED)
find_library(BSSL_SSL_LIB NAMES ssl PATHS ${_bssl_lib} NO_DEFAULT_PATH REQUIRED)
find_library(BSSL_CRYPTO_LIB NAMES crypto PATHS ${_bssl_lib} NO_DEFAULT_PATH REQUIRED)
get_filename_component(BSSL_LIBDIR ${BSSL_SSL_LIB} DIRECTORY)
add_library(bssl::crypto SHARED IMPORTED)
set_target_properties(bssl::crypto PROPERTIES IMPORTED_LOCATION ${BSSL_CRYPTO_LIB}
  INTERFACE_INCLUDE_DIRECTORIES ${BSSL_INCLUDE_DIR})
add_library(bssl::ssl SHARED IMPORTED)
set_target_properties(bssl::ssl PROPERTIES IMPORTED_LOCATION ${BSSL_SSL_LIB}
  INTERFACE_INCLUDE_DIRECTORIES ${BSSL_INCLUDE_DIR} INTERFACE_LINK_LIBRARIES bssl::crypto)
# Installed binaries need the rpath too (the build tree gets it automatically).
set(CMAKE_INSTALL_RPATH ${BSSL_LIBDIR})

pkg_check_modules(LIBUV REQUIRED IMPORTED_TARGET libuv>=1.44)
pkg_check_modules(NGHTTP2 REQUIRED IMPORTED_TARGET libnghttp2>=1.52)
pkg_check_modules(PROTOBUF_C REQUIRED IMPORTED_TARGET libprotobuf-c>=1.4)
pkg_check_modules(YAML REQUIRED IMPORTED_TARGET yaml-0.1)
find_program(PROTOC_C NAMES protoc-c REQUIRED)
if(SC_BUILD_TESTS)
  pkg_check_modules(CMOCKA REQUIRED IMPORTED_TARGET cmocka)
endif()
