# train.awk: L2-regularised logistic regression by stochastic gradient descent
# on the training fold (ids whose value mod 5 is not 0: stable across runs,
# so caching stays meaningful). Rows are visited in file order; the learning
# rate decays as lr / (1 + epoch).
# usage: awk -F, -v lr=LR -v epochs=E -v l2=L -f train.awk features.csv > model.txt
NR == 1 { nf = NF - 2; next }               # columns 2..NF-1 are features
$1 % 5 != 0 { row[++n] = $0 }
END {
	for (j = 0; j <= nf; j++) w[j] = 0
	for (e = 0; e < epochs; e++) {
		rate = lr / (1 + e)
		loss = 0
		for (i = 1; i <= n; i++) {
			split(row[i], f, ",")
			z = w[0]
			for (j = 1; j <= nf; j++) z += w[j] * f[j + 1]
			p = 1 / (1 + exp(-z))
			y = f[nf + 2]
			d = p - y
			w[0] -= rate * d
			for (j = 1; j <= nf; j++) w[j] -= rate * (d * f[j + 1] + l2 * w[j])
			loss += y ? -log(p + 1e-12) : -log(1 - p + 1e-12)
		}
		printf "epoch %d loss %.5f\n", e + 1, loss / n > "/dev/stderr"
	}
	printf "# logistic regression (SGD): lr=%s epochs=%s l2=%s rows=%d\n", lr, epochs, l2, n
	for (j = 0; j <= nf; j++) printf "w%d %.8f\n", j, w[j]
}
