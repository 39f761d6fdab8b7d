# cmake -P script behind the perfloc.consumer test: install -> configure -> build -> run.
# Inputs (all -D): PERFLOC_BINARY_DIR, CONSUMER_SOURCE_DIR, CONSUMER_WORK_DIR, CONFIG, GENERATOR,
# MAKE_PROGRAM, CXX_COMPILER, CXX_SCAN_DEPS, CXX_FLAGS, EXE_LINKER_FLAGS; STANDALONE_ASIO (the build's
# PERFLOC_STANDALONE_ASIO, handed to the consumer's configure as a user would set it; empty: Boost.Asio).
cmake_minimum_required(VERSION 3.28)

foreach(var IN ITEMS PERFLOC_BINARY_DIR CONSUMER_SOURCE_DIR CONSUMER_WORK_DIR GENERATOR CXX_COMPILER)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "perfloc.consumer: ${var} not given to run.cmake")
  endif()
endforeach()
if(NOT CONFIG)
  set(CONFIG Debug)
endif()

set(prefix "${CONSUMER_WORK_DIR}/prefix")
set(build "${CONSUMER_WORK_DIR}/build")
file(REMOVE_RECURSE "${prefix}" "${build}")

function(step name)
  list(JOIN ARGN " " command_line)
  message(STATUS "perfloc.consumer: ${name}: ${command_line}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "perfloc.consumer: ${name} FAILED (${result}): ${command_line}")
  endif()
endfunction()

step(install "${CMAKE_COMMAND}" --install "${PERFLOC_BINARY_DIR}" --config "${CONFIG}" --prefix "${prefix}")

set(configure_args
  -S "${CONSUMER_SOURCE_DIR}" -B "${build}" -G "${GENERATOR}"
  "-DCMAKE_BUILD_TYPE=${CONFIG}"
  "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}"
  "-DCMAKE_CXX_FLAGS=${CXX_FLAGS}"
  "-DCMAKE_EXE_LINKER_FLAGS=${EXE_LINKER_FLAGS}"
  "-DCMAKE_PREFIX_PATH=${prefix}"
  # Only the installed copy may be found, never the build tree's package registry entry.
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
if(MAKE_PROGRAM)
  list(APPEND configure_args "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()
if(CXX_SCAN_DEPS)
  list(APPEND configure_args "-DCMAKE_CXX_COMPILER_CLANG_SCAN_DEPS=${CXX_SCAN_DEPS}")
endif()
if(STANDALONE_ASIO)
  list(APPEND configure_args "-DPERFLOC_STANDALONE_ASIO=${STANDALONE_ASIO}")
endif()
step(configure "${CMAKE_COMMAND}" ${configure_args})

step(build "${CMAKE_COMMAND}" --build "${build}" --config "${CONFIG}")

find_program(consumer perfloc-consumer PATHS "${build}" "${build}/${CONFIG}" NO_DEFAULT_PATH NO_CACHE)
if(NOT consumer)
  message(FATAL_ERROR "perfloc.consumer: run FAILED: no perfloc-consumer binary under ${build}")
endif()
step(run "${consumer}")
message(STATUS "perfloc.consumer: passed")
