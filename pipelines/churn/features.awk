# features.awk: model features, standardized with the fitted mean/std
# written to a stats file so serving can reproduce them.
# usage: awk -F, -v stats=STATS -f features.awk clean.csv clean.csv > features.csv
BEGIN { OFS = "," }
NR == FNR {
	if (FNR == 1) next
	m++
	for (k = 1; k <= 5; k++) { x = feat(k); s[k] += x; ss[k] += x * x }
	next
}
FNR == 1 {
	for (k = 1; k <= 5; k++) {
		mean[k] = s[k] / m
		sd[k] = sqrt(ss[k] / m - mean[k] * mean[k]); if (sd[k] == 0) sd[k] = 1
		printf "%s,%.6f,%.6f\n", name(k), mean[k], sd[k] > stats
	}
	print "id,tenure_z,charges_z,calls_z,usage_z,charge_per_month_z,plan_basic,plan_premium,churned"
	next
}
{
	printf "%s", $1
	for (k = 1; k <= 5; k++) printf ",%.5f", (feat(k) - mean[k]) / sd[k]
	printf ",%d,%d,%s\n", $3 == "basic", $3 == "premium", $7
}
function feat(k) {
	if (k == 1) return log(1 + $2)
	if (k == 2) return $4
	if (k == 3) return $5
	if (k == 4) return log(1 + $6)
	return $4 / ($2 + 1)
}
function name(k) { return k == 1 ? "log_tenure" : k == 2 ? "charges" : k == 3 ? "support_calls" : k == 4 ? "log_usage" : "charge_per_month" }
