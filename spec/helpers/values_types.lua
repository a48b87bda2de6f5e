-- helpers/values_types.lua -- registers the types of helpers/values.lua on
-- require: what `weft worker --require helpers.values_types` loads in the
-- copy property spec's Redis workers.
return require("helpers.values").register_types()
