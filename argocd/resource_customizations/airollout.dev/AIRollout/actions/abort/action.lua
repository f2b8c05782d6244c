-- The abort verb, as `kubectl annotate airollout NAME airollout.dev/action=abort` sets it.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["airollout.dev/action"] = "abort"
return obj
