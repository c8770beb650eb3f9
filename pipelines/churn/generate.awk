# generate.awk: synthetic customer-churn CSV.
# usage: awk -v rows=N -v seed=S -f generate.awk > churn.csv
# Columns: id, tenure (months), plan, monthly charges (~1% missing), support
# calls, usage (GB), churned (0/1) drawn from a logistic model of the others.
BEGIN {
	srand(seed)
	print "id,tenure,plan,charges,support_calls,usage_gb,churned"
	split("basic,standard,premium", plans, ",")
	for (i = 1; i <= rows; i++) {
		id = 100000 + i
		if (i > 1 && rand() < 0.005) id = 100000 + int(rand() * (i - 1)) + 1   # ~0.5% duplicate ids
		tenure = int(-log(1 - rand()) * 24) + 1
		p = int(rand() * 3) + 1
		charges = 20 + p * 25 + rand() * 30
		if (rand() < 0.002) charges *= 20                                     # rare outliers
		calls = int(-log(1 - rand()) * 1.5)
		usage = -log(1 - rand()) * (10 + p * 15)
		z = -1.2 - 0.05 * tenure + 0.45 * calls + 0.015 * (charges > 400 ? 400 : charges) - 0.01 * usage + (p == 1 ? 0.4 : 0)
		churned = rand() < 1 / (1 + exp(-z)) ? 1 : 0
		cs = rand() < 0.01 ? "" : sprintf("%.2f", charges)                    # ~1% missing
		printf "%d,%d,%s,%s,%d,%.2f,%d\n", id, tenure, plans[p], cs, calls, usage, churned
	}
}
