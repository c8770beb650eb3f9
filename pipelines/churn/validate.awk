# validate.awk: ROC-AUC and accuracy on the holdout fold (id mod 5 == 0);
# exits 1 when AUC is below min_auc, so deploy does not run.
# usage: awk -F, -v min_auc=A -f validate.awk model.txt features.csv > report.txt
FNR == NR { if ($0 !~ /^#/) { split($0, kv, " "); w[substr(kv[1], 2) + 0] = kv[2] }; next }
FNR == 1 { nf = NF - 2; next }
$1 % 5 == 0 {
	z = w[0]
	for (j = 1; j <= nf; j++) z += w[j] * $(j + 1)
	n++; score[n] = 1 / (1 + exp(-z)); label[n] = $NF
	pos += $NF; correct += (score[n] >= 0.5) == $NF
}
END {
	# AUC = P(score of a random positive > score of a random negative), by ranks.
	for (i = 1; i <= n; i++) idx[i] = i
	for (gap = int(n / 2); gap > 0; gap = int(gap / 2))
		for (i = gap + 1; i <= n; i++) {
			t = idx[i]
			for (j = i; j > gap && score[idx[j - gap]] > score[t]; j -= gap) idx[j] = idx[j - gap]
			idx[j] = t
		}
	for (i = 1; i <= n; i++) if (label[idx[i]]) ranksum += i
	neg = n - pos
	auc = (ranksum - pos * (pos + 1) / 2) / (pos * neg)
	printf "holdout_rows %d\nauc %.4f\naccuracy %.4f\nmin_auc %s\n", n, auc, correct / n, min_auc
	if (auc < min_auc) {
		printf "gate failed: auc %.4f < min_auc %s\n", auc, min_auc > "/dev/stderr"
		exit 1
	}
}
