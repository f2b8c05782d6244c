-- The resume verb, as `kubectl annotate airollout NAME airollout.dev/action=resume` sets it.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["airollout.dev/action"] = "resume"
return obj
