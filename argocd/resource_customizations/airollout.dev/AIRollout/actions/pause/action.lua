-- The pause verb, as `kubectl annotate airollout NAME airollout.dev/action=pause` sets it.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["airollout.dev/action"] = "pause"
return obj
