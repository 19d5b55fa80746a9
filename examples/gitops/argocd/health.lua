-- Argo CD health of ooda's Organisation and Project (group ooda.run), from their status as the
-- operator writes it: observedGeneration first (a spec it has not yet seen is Progressing whatever
-- the conditions say), then kstatus's Stalled and Reconciling, then Ready.
local health = { status = "Progressing", message = "waiting for the ooda operator" }
if obj.status == nil then
  return health
end
local generation = obj.metadata.generation
if generation ~= nil and (obj.status.observedGeneration == nil or obj.status.observedGeneration < generation) then
  health.message = "the ooda operator has not yet observed generation " .. generation
  return health
end
local conditions = {}
for _, condition in ipairs(obj.status.conditions or {}) do
  conditions[condition.type] = condition
end
local stalled = conditions["Stalled"]
if stalled ~= nil and stalled.status == "True" then
  return { status = "Degraded", message = (stalled.reason or "") .. ": " .. (stalled.message or "") }
end
local ready = conditions["Ready"]
if ready == nil or ready.status ~= "True" then
  local reconciling = conditions["Reconciling"]
  if reconciling ~= nil and reconciling.status == "True" then
    health.message = reconciling.message or ""
  end
  return health
end
-- Asleep or stopped as its users asked: as its spec says, and it wakes or starts on request.
if ready.reason == "Hibernated" or ready.reason == "Stopped" then
  return { status = "Suspended", message = ready.message or "" }
end
return { status = "Healthy", message = ready.message or "" }
