<#
.SYNOPSIS
  Registers `syncd run` with the Windows Task Scheduler: started at logon, restarted if it
  fails, without a console window (its log goes to syncd.log in syncd's state dir).

.DESCRIPTION
  Run from a normal (not elevated) PowerShell, after `pipx install syncd` or `pip install syncd`
  and `syncd init`:

    powershell -ExecutionPolicy Bypass -File packaging\windows\syncd-task.ps1
    Start-ScheduledTask -TaskName syncd          # start it now instead of at the next logon
    syncd status                                 # asks the daemon (through [status] listen)
    powershell -ExecutionPolicy Bypass -File packaging\windows\syncd-task.ps1 -Uninstall

  On Windows there is no Unix control socket: set `[status] listen = "127.0.0.1:8384"` in the
  config so that `syncd status` (and a browser) can ask the running daemon.

.PARAMETER Config
  Config file passed as `syncd run -c FILE` (default: syncd's own lookup, %SYNCD_CONFIG% or
  %USERPROFILE%\.config\syncd\config.toml).

.PARAMETER TaskName
  Name of the scheduled task (default: syncd). Use one task per config.

.PARAMETER Uninstall
  Stop and remove the task instead.
#>
[CmdletBinding()]
param(
  [string]$Config = "",
  [string]$TaskName = "syncd",
  [switch]$Uninstall
)
$ErrorActionPreference = "Stop"

if ($Uninstall) {
  if (Get-ScheduledTask -TaskName $TaskName -ErrorAction SilentlyContinue) {
    Stop-ScheduledTask -TaskName $TaskName -ErrorAction SilentlyContinue
    Unregister-ScheduledTask -TaskName $TaskName -Confirm:$false
    Write-Host "removed scheduled task '$TaskName'"
  } else {
    Write-Host "no scheduled task '$TaskName'"
  }
  exit 0
}

$syncd = (Get-Command syncd -ErrorAction SilentlyContinue).Source
if (-not $syncd) {
  throw "syncd is not on PATH: install it first (pipx install syncd), then run this again"
}
# pythonw.exe (beside syncd.exe in a pipx venv, or one directory up for a plain pip install)
# runs without a console window; syncd then writes its log to syncd.log in its state dir
# (%USERPROFILE%\.local\state\syncd by default). Without pythonw.exe, syncd.exe runs in a
# console window of its own, logging there.
$scripts = Split-Path -Parent $syncd
$pythonw = @((Join-Path $scripts "pythonw.exe"), (Join-Path (Split-Path -Parent $scripts) "pythonw.exe")) |
  Where-Object { Test-Path $_ } | Select-Object -First 1

$runArgs = "run"
if ($Config) { $runArgs += " -c `"$((Resolve-Path $Config).Path)`"" }
if ($pythonw) {
  $action = New-ScheduledTaskAction -Execute $pythonw -Argument "-m syncd $runArgs" `
    -WorkingDirectory $env:USERPROFILE
  $what = "$pythonw -m syncd $runArgs"
} else {
  $action = New-ScheduledTaskAction -Execute $syncd -Argument $runArgs `
    -WorkingDirectory $env:USERPROFILE
  $what = "$syncd $runArgs"
}

$trigger = New-ScheduledTaskTrigger -AtLogOn -User "$env:USERDOMAIN\$env:USERNAME"
$settings = New-ScheduledTaskSettingsSet `
  -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries `
  -ExecutionTimeLimit ([TimeSpan]::Zero) `
  -RestartCount 999 -RestartInterval (New-TimeSpan -Minutes 1) `
  -MultipleInstances IgnoreNew -StartWhenAvailable -Hidden
# Runs as you, only while you are logged on, without elevation.
$principal = New-ScheduledTaskPrincipal -UserId "$env:USERDOMAIN\$env:USERNAME" `
  -LogonType Interactive -RunLevel Limited

Register-ScheduledTask -TaskName $TaskName -Action $action -Trigger $trigger `
  -Settings $settings -Principal $principal -Force `
  -Description "syncd: mirror folders to a server, live (syncd run)" | Out-Null

Write-Host "registered scheduled task '$TaskName': $what"
if ($pythonw) { Write-Host "log: syncd.log in syncd's state dir ([sync] state_dir)" }
Write-Host "start it now with: Start-ScheduledTask -TaskName $TaskName"
