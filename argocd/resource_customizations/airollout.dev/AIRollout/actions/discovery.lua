-- The AIRollout verbs Argo CD offers, each enabled only where the operator would carry it out.
local actions = {}
local phase = "Pending"
if obj.status ~= nil and obj.status.phase ~= nil then
  phase = obj.status.phase
end
local running = phase == "Progressing" or phase == "Paused"
local killSwitch = obj.spec ~= nil and obj.spec.killSwitch == true
actions["promote"] = {["disabled"] = not running, ["displayName"] = "Promote to the next stage"}
actions["promote-full"] = {["disabled"] = not running, ["displayName"] = "Promote fully"}
actions["pause"] = {["disabled"] = phase ~= "Progressing"}
actions["resume"] = {["disabled"] = phase ~= "Paused"}
actions["abort"] = {["disabled"] = phase == "RolledBack", ["displayName"] = "Abort (kill switch)"}
actions["retry"] = {["disabled"] = killSwitch or not (phase == "RolledBack" or phase == "Failed")}
return actions
