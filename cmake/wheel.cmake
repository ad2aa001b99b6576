# The Python wheel (pyproject.toml, scikit-build-core): what goes inside agile_torch/.
# Only scikit-build-core configures with SKBUILD; it installs the "wheel" component alone
# (install.components), so other install() rules never land at the top of site-packages.
#   agile_torch/_lib/  libagile.so.0 (its SONAME, one file: wheels hold no symlinks),
#                      libagile_cufft.so, libagile_aten.so (when torch was found)
#   agile_torch/_bin/  agile-worker, agilectl, agile-guard (RPATH $ORIGIN/../_lib)
# libagile finds agile-worker at ../_bin from its own path (client.c), as in the build tree.
set(_wheel_bins agile-worker agilectl agile-guard)
set(_wheel_libs agile_cufft)
if(TARGET agile_aten)
  list(APPEND _wheel_libs agile_aten)
endif()
set_target_properties(${_wheel_bins} PROPERTIES INSTALL_RPATH "$ORIGIN/../_lib")
set_target_properties(${_wheel_libs} PROPERTIES INSTALL_RPATH "$ORIGIN")
install(TARGETS ${_wheel_bins} RUNTIME DESTINATION agile_torch/_bin COMPONENT wheel)
install(TARGETS ${_wheel_libs} LIBRARY DESTINATION agile_torch/_lib COMPONENT wheel)
# libagile needs no RPATH (system libraries only); installed under its SONAME.
install(FILES $<TARGET_FILE:agile> DESTINATION agile_torch/_lib RENAME libagile.so.0
        PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE
                    WORLD_READ WORLD_EXECUTE COMPONENT wheel)
# What the wheel needs, and nothing else (no tests, benchmarks, samples): build.targets.
add_custom_target(agile_wheel DEPENDS agile ${_wheel_libs} ${_wheel_bins})
