-- Argo CD health check for stratos.io/DistillationJob.
-- Install it as resource.customizations.health.stratos.io_DistillationJob in argocd-cm
-- (charts/stratos/README.md, "GitOps health"). Lua 5.1, standard functions only, as Argo CD runs it.
--   Progressing  the operator has not seen this generation yet, or the pipeline is at work
--   Healthy      Serving with a ready endpoint, or Succeeded (trained and evaluated, serving off)
--   Degraded     Failed (the Failed condition's reason and message), or Serving with the endpoint down
--   Suspended    spec.suspend stopped the pipeline
local hs = {}

local function condition(status, ctype)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  local text = c.reason or fallback
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to pick the job up"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to act on generation " .. tostring(generation)
  return hs
end

local phase = status.phase or "Pending"
local failed = condition(status, "Failed")
if phase == "Failed" or (failed ~= nil and failed.status == "True") then
  hs.status = "Degraded"
  hs.message = describe(failed, status.message or "Failed")
  return hs
end

local suspended = condition(status, "Suspended")
if phase == "Suspended" or (suspended ~= nil and suspended.status == "True") then
  hs.status = "Suspended"
  hs.message = describe(suspended, "Suspended")
  return hs
end

local ready = condition(status, "Ready")
if phase == "Serving" then
  if ready ~= nil and ready.status == "True" then
    hs.status = "Healthy"
  else
    hs.status = "Degraded"
  end
  hs.message = describe(ready, "Serving")
  return hs
end

if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Succeeded")
  return hs
end

hs.status = "Progressing"
if status.message ~= nil and status.message ~= "" then
  hs.message = phase .. ": " .. status.message
else
  hs.message = describe(ready, phase)
end
return hs
