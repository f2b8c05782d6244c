-- The promote-full verb, as `kubectl annotate airollout NAME airollout.dev/action=promote-full` sets it.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["airollout.dev/action"] = "promote-full"
return obj
