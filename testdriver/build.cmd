@echo off
rem wskrtest.sys and wskreplay-agent.exe with Visual Studio and the WDK, from the same
rem sources as the Makefile (docs/testdriver.md). Run from an "x64 Native Tools Command
rem Prompt". WSKRTEST_WDK selects the WDK's own wsk.h, wdmsec.h and TraceLogging.
rem Not run by this project's CI (no Windows machine): see docs/testdriver.md.
setlocal
set HERE=%~dp0
set OUT=%HERE%build
if not exist "%OUT%" mkdir "%OUT%"
if "%WDKROOT%"=="" set "WDKROOT=%ProgramFiles(x86)%\Windows Kits\10"
if "%WDKVER%"=="" for /f %%v in ('dir /b /ad /o-n "%WDKROOT%\Include\10.*"') do if not defined WDKVER set WDKVER=%%v
set "KM=%WDKROOT%\Include\%WDKVER%\km"
set "SHARED=%WDKROOT%\Include\%WDKVER%\shared"
set "KMLIB=%WDKROOT%\Lib\%WDKVER%\km\x64"

cl /nologo /c /W4 /O2 /Zi /GS /Gy /kernel /std:c11 /D_AMD64_ /DAMD64 /D_WIN64 /D_KERNEL_MODE ^
   /DWSKRTEST_WDK /DNTDDI_VERSION=0x0A000004 /I"%KM%" /I"%KM%\crt" /I"%SHARED%" ^
   /I"%HERE%." /I"%HERE%..\instrument" "%HERE%driver.c" /Fo"%OUT%\driver.obj" || exit /b 1
link /nologo /driver /subsystem:native /entry:DriverEntry /nodefaultlib /debug ^
   /out:"%OUT%\wskrtest.sys" "%OUT%\driver.obj" /libpath:"%KMLIB%" ^
   ntoskrnl.lib hal.lib netio.lib wdmsec.lib BufferOverflowFastFailK.lib || exit /b 1

cl /nologo /W4 /O2 /std:c11 /I"%HERE%." "%HERE%agent.c" "%HERE%agent_device.c" ^
   "%HERE%wire.c" "%HERE%sha256.c" /Fo"%OUT%\\" /Fe"%OUT%\wskreplay-agent.exe" ^
   /link ws2_32.lib bcrypt.lib ntdll.lib || exit /b 1
echo built %OUT%\wskrtest.sys and %OUT%\wskreplay-agent.exe
