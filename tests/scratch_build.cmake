# Shared by the cmake -P scripts that configure, build and run a separate build in a scratch directory
# (consumer/run.cmake, asio_versions.cmake). `what` names the test in every message.

# Stops the script unless each named -D input is given.
function(scratch_require what)
  foreach(var IN LISTS ARGN)
    if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
      message(FATAL_ERROR "${what}: ${var} not given")
    endif()
  endforeach()
endfunction()

# Runs one step; stops the script, saying which step and command, when it fails.
function(scratch_step what name)
  list(JOIN ARGN " " command_line)
  message(STATUS "${what}: ${name}: ${command_line}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result)
  if(NOT result EQUAL 0)
    message(FATAL_ERROR "${what}: ${name} FAILED (${result}): ${command_line}")
  endif()
endfunction()

# Appends the outer build's make program and module scanner (-D inputs MAKE_PROGRAM, CXX_SCAN_DEPS, either
# may be empty) to the configure arguments in the list variable `args`.
macro(scratch_toolchain_args args)
  if(MAKE_PROGRAM)
    list(APPEND ${args} "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
  endif()
  if(CXX_SCAN_DEPS)
    list(APPEND ${args} "-DCMAKE_CXX_COMPILER_CLANG_SCAN_DEPS=${CXX_SCAN_DEPS}")
  endif()
endmacro()
