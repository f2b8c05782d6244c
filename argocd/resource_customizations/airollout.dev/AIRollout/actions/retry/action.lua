-- The retry verb, as `kubectl annotate airollout NAME airollout.dev/action=retry` sets it.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["airollout.dev/action"] = "retry"
return obj
