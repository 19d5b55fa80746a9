-- Argo CD health of ooda's Organisation and Project (group ooda.run), from their status: the
-- operator's observedGeneration first (a spec it has not yet seen is Progressing whatever the
-- conditions say), then the Ready condition and its reason.
local health = { status = "Progressing", message = "waiting for the ooda operator" }
if obj.status == nil then
  return health
end
local generation = obj.metadata.generation
if generation ~= nil and (obj.status.observedGeneration == nil or obj.status.observedGeneration < generation) then
  health.message = "the ooda operator has not yet observed generation " .. generation
  return health
end
local ready = nil
for _, condition in ipairs(obj.status.conditions or {}) do
  if condition.type == "Ready" then
    ready = condition
  end
end
if ready == nil then
  return health
end
local message = ready.message or ""
if ready.status == "True" then
  return { status = "Healthy", message = message }
end
local reason = ready.reason or ""
-- Asleep or stopped as its users asked: not broken, and it wakes or starts on request.
if reason == "Hibernated" or reason == "Stopped" then
  return { status = "Suspended", message = message }
end
-- What waits for someone to change the object or the configuration, not for time.
if obj.status.phase == "Failed" or reason == "UnknownJurisdiction" or reason == "NamespaceConflict" then
  return { status = "Degraded", message = reason .. ": " .. message }
end
return { status = "Progressing", message = message }
