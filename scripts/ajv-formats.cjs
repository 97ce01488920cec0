// The number formats schemars writes into schemas/runbook.v1.json (`uint32`, ...), for ajv in
// strict mode (tests/integration/schema.rs): each checks its range, as an editor would.
module.exports = (ajv) => {
  const whole = (min, max) => ({
    type: "number",
    validate: (n) => Number.isInteger(n) && n >= min && n <= max,
  });
  ajv.addFormat("uint8", whole(0, 255));
  ajv.addFormat("uint16", whole(0, 65535));
  ajv.addFormat("uint32", whole(0, 4294967295));
  ajv.addFormat("uint64", whole(0, Number.MAX_SAFE_INTEGER));
  ajv.addFormat("uint", whole(0, Number.MAX_SAFE_INTEGER));
  ajv.addFormat("int32", whole(-2147483648, 2147483647));
  ajv.addFormat("int64", whole(Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER));
  ajv.addFormat("double", { type: "number", validate: (n) => Number.isFinite(n) });
  return ajv;
};
