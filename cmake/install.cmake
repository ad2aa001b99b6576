# `cmake --install build [--prefix P]`: what a system install of agile is (docs/operating.md,
# docs/c-api.md). Not for the wheel: scikit-build-core installs its own component
# (cmake/wheel.cmake) and never configures this file.
#   P/bin/           agile-worker, agilectl, agile-guard (RPATH $ORIGIN/../LIBDIR)
#   P/LIBDIR/        libagile.so (+ SONAME link), libagile_cufft.so, pkgconfig/agile.pc
#   P/include/agile/ agile.h defs.h err.h fft.h ring.h
#   P/lib/systemd/system/agile-worker.service, P/share/doc/agile/ (operating.md, c-api.md,
#   design.md, an example worker.conf)
include(GNUInstallDirs)
set(_agile_bins agile-worker agilectl agile-guard)
# The installed files keep the build tree's RUNPATH ($ORIGIN/../lib first, top CMakeLists):
# CMake cannot rewrite a $ORIGIN RUNPATH in place, and bin/../lib is where LIBDIR is for a
# /usr/local or private prefix (for /usr the loader finds libagile without it).
set_target_properties(${_agile_bins} agile agile_cufft PROPERTIES
  INSTALL_RPATH "${CMAKE_BUILD_RPATH}")
install(TARGETS ${_agile_bins} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS agile agile_cufft LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY csrc/include/agile DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        FILES_MATCHING PATTERN "*.h")

file(RELATIVE_PATH AGILE_PC_UP /${CMAKE_INSTALL_LIBDIR}/pkgconfig /)
string(REGEX REPLACE "/$" "" AGILE_PC_UP "${AGILE_PC_UP}")
configure_file(cmake/agile.pc.in ${CMAKE_BINARY_DIR}/agile.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/agile.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

# The systemd unit, with this install's paths (packaging/agile-worker.service.in).
set(AGILE_WORKER_PATH ${CMAKE_INSTALL_FULL_BINDIR}/agile-worker)
set(AGILE_CONFIG_PATH ${CMAKE_INSTALL_FULL_SYSCONFDIR}/agile/worker.conf)
set(AGILE_DOC_DIR ${CMAKE_INSTALL_FULL_DOCDIR})
configure_file(packaging/agile-worker.service.in ${CMAKE_BINARY_DIR}/packaging/agile-worker.service
               @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/packaging/agile-worker.service
        DESTINATION lib/systemd/system)
install(FILES docs/operating.md docs/c-api.md docs/design.md packaging/worker.conf
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
# The unit's --config: the example, unless an operator's file is there already (kept).
# PREFIX/etc (/etc for /usr), PREFIX as given to cmake --install.
install(CODE "
  set(_etc \"\${CMAKE_INSTALL_PREFIX}/etc/agile\")
  if(CMAKE_INSTALL_PREFIX STREQUAL \"/usr\")
    set(_etc /etc/agile)
  endif()
  if(NOT EXISTS \"\$ENV{DESTDIR}\${_etc}/worker.conf\")
    file(INSTALL \"${CMAKE_CURRENT_SOURCE_DIR}/packaging/worker.conf\" DESTINATION \"\${_etc}\")
  endif()")
