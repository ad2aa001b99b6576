# agile_target_warnings(tgt): -Werror and friends on our own code only.
function(agile_target_warnings tgt)
  target_compile_options(${tgt} PRIVATE $<$<COMPILE_LANGUAGE:C>:${AGILE_WARN}>)
endfunction()

# agile_add_test(name SOURCES a.c [b.c] LIBS x [y] [TIMEOUT s] [LABELS l])
# A cmocka unit test: one executable, one ctest entry, a timeout so a hang fails.
function(agile_add_test name)
  if(NOT AGILE_TESTS OR AGILE_FUZZ)
    return()
  endif()
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300) # generous: a loaded 2-core machine (CI) runs ASan builds slowly
  endif()
  add_executable(${name} ${T_SOURCES})
  agile_target_warnings(${name})
  target_include_directories(${name} PRIVATE ${CMOCKA_INCLUDE_DIR})
  target_link_libraries(${name} PRIVATE ${T_LIBS} ${CMOCKA_LIBRARY})
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES TIMEOUT ${T_TIMEOUT})
  if(T_LABELS)
    set_tests_properties(${name} PROPERTIES LABELS "${T_LABELS}")
  endif()
endfunction()

# agile_add_fuzzer(name SOURCES a.c LIBS x [SECONDS n] [CORPUS dir])
# A libFuzzer target (only in the AGILE_FUZZ configuration), registered with ctest as a
# bounded run: -max_total_time, so the suite stays inside its time budget.
function(agile_add_fuzzer name)
  if(NOT AGILE_FUZZ)
    return()
  endif()
  cmake_parse_arguments(F "" "SECONDS;CORPUS" "SOURCES;LIBS" ${ARGN})
  if(NOT F_SECONDS)
    set(F_SECONDS $ENV{AGILE_FUZZ_SECONDS})
  endif()
  if(NOT F_SECONDS)
    set(F_SECONDS 30)
  endif()
  add_executable(${name} ${F_SOURCES})
  agile_target_warnings(${name})
  target_link_options(${name} PRIVATE -fsanitize=fuzzer)
  target_link_libraries(${name} PRIVATE ${F_LIBS})
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/fuzz)
  set(work ${CMAKE_BINARY_DIR}/fuzz/${name}.corpus)
  file(MAKE_DIRECTORY ${work})
  set(seeds "")
  if(F_CORPUS)
    set(seeds ${F_CORPUS})
  endif()
  add_test(NAME ${name}
           COMMAND ${name} -max_total_time=${F_SECONDS} -timeout=60 -rss_limit_mb=2048
                   -print_final_stats=1 ${work} ${seeds})
  math(EXPR to "${F_SECONDS} + 120")
  set_tests_properties(${name} PROPERTIES TIMEOUT ${to} LABELS fuzz)
endfunction()

# agile_shared_no_undefined(tgt): a shared library must resolve every symbol at link time
# (-Wl,--no-undefined). Not under clang's sanitizers: clang links the ASan/UBSan runtime
# into executables only, so a sanitized .so legitimately leaves those symbols to the program.
function(agile_shared_no_undefined tgt)
  if(NOT AGILE_FUZZ AND NOT (AGILE_SANITIZE AND CMAKE_C_COMPILER_ID MATCHES "Clang"))
    target_link_options(${tgt} PRIVATE -Wl,--no-undefined)
  endif()
endfunction()
