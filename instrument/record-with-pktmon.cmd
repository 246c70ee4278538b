@echo off
rem Record an instrumented WSK driver for wskreplay: the WskReplay.Recorder events and the
rem packets, in one .etl with one clock. Run from an elevated prompt (Windows 10 2004+).
rem   record-with-pktmon.cmd [REMOTE_PORT]
rem Then reproduce the problem, press a key, and send wskreplay.etl.
rem See docs/recording.md; on any OS: wskreplay import wskreplay.etl -o field.wskt

pktmon filter remove >nul 2>&1
if not "%~1"=="" pktmon filter add WskReplayTcp -t TCP -p %1
pktmon start --capture --pkt-size 0 --trace -p WskReplay.Recorder -l 5 --file-name wskreplay.etl
if errorlevel 1 exit /b 1
echo Recording. Reproduce the problem, then press a key to stop.
pause >nul
pktmon stop
if not "%~1"=="" pktmon filter remove
echo Wrote wskreplay.etl
