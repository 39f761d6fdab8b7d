# cmake -P script behind the perfloc.consumer test: install -> configure -> build -> run.
# Inputs (all -D): PERFLOC_BINARY_DIR, CONSUMER_SOURCE_DIR, CONSUMER_WORK_DIR, CONFIG, GENERATOR,
# MAKE_PROGRAM, CXX_COMPILER, CXX_SCAN_DEPS, CXX_FLAGS, EXE_LINKER_FLAGS; STANDALONE_ASIO (the build's
# PERFLOC_STANDALONE_ASIO, handed to the consumer's configure as a user would set it; empty: Boost.Asio).
cmake_minimum_required(VERSION 3.28)

include("${CMAKE_CURRENT_LIST_DIR}/../scratch_build.cmake")
scratch_require(perfloc.consumer PERFLOC_BINARY_DIR CONSUMER_SOURCE_DIR CONSUMER_WORK_DIR GENERATOR CXX_COMPILER)
if(NOT CONFIG)
  set(CONFIG Debug)
endif()

set(prefix "${CONSUMER_WORK_DIR}/prefix")
set(build "${CONSUMER_WORK_DIR}/build")
file(REMOVE_RECURSE "${prefix}" "${build}")

scratch_step(perfloc.consumer install "${CMAKE_COMMAND}" --install "${PERFLOC_BINARY_DIR}" --config "${CONFIG}" --prefix "${prefix}")

set(configure_args
  -S "${CONSUMER_SOURCE_DIR}" -B "${build}" -G "${GENERATOR}"
  "-DCMAKE_BUILD_TYPE=${CONFIG}"
  "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}"
  "-DCMAKE_CXX_FLAGS=${CXX_FLAGS}"
  "-DCMAKE_EXE_LINKER_FLAGS=${EXE_LINKER_FLAGS}"
  "-DCMAKE_PREFIX_PATH=${prefix}"
  # Only the installed copy may be found, never the build tree's package registry entry.
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
scratch_toolchain_args(configure_args)
if(STANDALONE_ASIO)
  list(APPEND configure_args "-DPERFLOC_STANDALONE_ASIO=${STANDALONE_ASIO}")
endif()
scratch_step(perfloc.consumer configure "${CMAKE_COMMAND}" ${configure_args})

scratch_step(perfloc.consumer build "${CMAKE_COMMAND}" --build "${build}" --config "${CONFIG}")

find_program(consumer perfloc-consumer PATHS "${build}" "${build}/${CONFIG}" NO_DEFAULT_PATH NO_CACHE)
if(NOT consumer)
  message(FATAL_ERROR "perfloc.consumer: run FAILED: no perfloc-consumer binary under ${build}")
endif()
scratch_step(perfloc.consumer run "${consumer}")
message(STATUS "perfloc.consumer: passed")
