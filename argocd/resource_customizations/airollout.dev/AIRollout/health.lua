-- Health of an AIRollout (airollout.dev/v1alpha1) from its status.phase, with the operator's status.message.
local hs = {}
if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the AIRollout operator to start the rollout"
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the AIRollout operator to read the latest spec"
  return hs
end
local phase = obj.status.phase
local message = obj.status.message
if message == nil or message == "" then
  message = "The rollout is " .. phase
end
hs.message = message
if phase == "Pending" or phase == "Progressing" then
  hs.status = "Progressing"
elseif phase == "Paused" then
  hs.status = "Suspended"
elseif phase == "Promoted" or phase == "Completed" then
  hs.status = "Healthy"
elseif phase == "RolledBack" or phase == "Failed" then
  hs.status = "Degraded"
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. phase .. ": " .. message
end
return hs
