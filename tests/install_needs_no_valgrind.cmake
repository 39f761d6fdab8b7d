# cmake -P script behind perfloc.install_needs_no_valgrind: a Debug build may describe its memory to Valgrind,
# but what it installs must not ask the consumer for <valgrind/memcheck.h> (a PUBLIC PERFLOC_TRACK_VALGRIND
# would make every importer of a Debug install include it). Inputs (-D): PERFLOC_BINARY_DIR, WORK_DIR, CONFIG.
cmake_minimum_required(VERSION 3.28)
set(prefix "${WORK_DIR}/prefix")
file(REMOVE_RECURSE "${prefix}")
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${PERFLOC_BINARY_DIR}" --config "${CONFIG}" --prefix "${prefix}"
                RESULT_VARIABLE result OUTPUT_QUIET)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "install failed (${result})")
endif()
file(GLOB_RECURSE exported "${prefix}/*.cmake")
foreach(file IN LISTS exported)
  file(READ "${file}" text)
  if(text MATCHES "PERFLOC_TRACK_VALGRIND|gdwarf")
    message(FATAL_ERROR "${file} passes perfloc's Valgrind settings on to consumers")
  endif()
endforeach()
message(STATUS "the install asks nothing of Valgrind (${prefix})")
