# cmake -P script behind the perfloc.asio_versions.<version> tests (label asio-versions): builds this source
# tree against one standalone Asio (PERFLOC_STANDALONE_ASIO=<ASIO_DIR>/include) in a scratch build, then runs
# there the perfloc.asio suites (asio, asio_v2) and perfloc.consumer (the installed package, imported by an
# outside program that uses perfloc.asio). The compiler and linker flags are the outer build's (a sanitizer
# preset's build runs them under that sanitizer; the sanitizer's options come through the environment).
# Inputs (all -D): SOURCE_DIR, ASIO_DIR, WORK_DIR, CONFIG, GENERATOR, MAKE_PROGRAM, CXX_COMPILER, CXX_SCAN_DEPS,
# CXX_FLAGS, EXE_LINKER_FLAGS, SHARED_LINKER_FLAGS (each may be empty), CTEST_COMMAND.
cmake_minimum_required(VERSION 3.28)

include("${CMAKE_CURRENT_LIST_DIR}/scratch_build.cmake")
scratch_require(asio-versions SOURCE_DIR ASIO_DIR WORK_DIR GENERATOR CXX_COMPILER CTEST_COMMAND)
if(NOT CONFIG)
  set(CONFIG Debug)
endif()
if(NOT EXISTS "${ASIO_DIR}/include/asio.hpp")
  message(FATAL_ERROR "asio-versions: no include/asio.hpp under ${ASIO_DIR}")
endif()

set(build "${WORK_DIR}/build")
file(REMOVE_RECURSE "${build}")

set(configure_args
  -S "${SOURCE_DIR}" -B "${build}" -G "${GENERATOR}"
  "-DCMAKE_BUILD_TYPE=${CONFIG}"
  "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}"
  "-DCMAKE_CXX_FLAGS=${CXX_FLAGS}"
  "-DCMAKE_EXE_LINKER_FLAGS=${EXE_LINKER_FLAGS}"
  "-DCMAKE_SHARED_LINKER_FLAGS=${SHARED_LINKER_FLAGS}"
  "-DPERFLOC_STANDALONE_ASIO=${ASIO_DIR}/include"
  -DPERFLOC_BUILD_TESTS=ON -DPERFLOC_BUILD_EXAMPLES=OFF -DPERFLOC_VALGRIND=OFF
  "-DPERFLOC_ASIO_VERSIONS_DIR=" # no nested asio-versions tests
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
scratch_toolchain_args(configure_args)
scratch_step("asio-versions ${ASIO_DIR}" configure "${CMAKE_COMMAND}" ${configure_args})
scratch_step("asio-versions ${ASIO_DIR}" build "${CMAKE_COMMAND}" --build "${build}" --config "${CONFIG}" --target perfloc perfloc.tests.asio perfloc.tests.asio_v2)
scratch_step("asio-versions ${ASIO_DIR}" test "${CTEST_COMMAND}" --test-dir "${build}" -C "${CONFIG}" --output-on-failure
     -R "^perfloc\\.(tests\\.asio|tests\\.asio_v2|consumer)$")
message(STATUS "asio-versions: passed against ${ASIO_DIR} (flags: ${CXX_FLAGS})")
