# prepare.awk: drop duplicate ids (first wins), fill missing charges with the
# median, clip charges at the given cap.
# usage: awk -F, -v cap=C -f prepare.awk churn.csv churn.csv > clean.csv
BEGIN { OFS = "," }
NR == FNR {                                   # pass 1: median of charges
	if (FNR > 1 && $4 != "") v[++n] = $4 + 0
	next
}
FNR == 1 {
	asort_n(v, n)
	median = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
	print; next
}
{
	if ($1 in seen) next
	seen[$1] = 1
	if ($4 == "") $4 = median
	if ($4 + 0 > cap) $4 = cap
	$4 = sprintf("%.2f", $4)
	print
}
function asort_n(a, n,    i, j, t) {        # insertion sort is too slow; shell sort
	for (gap = int(n / 2); gap > 0; gap = int(gap / 2))
		for (i = gap + 1; i <= n; i++) {
			t = a[i]
			for (j = i; j > gap && a[j - gap] > t; j -= gap) a[j] = a[j - gap]
			a[j] = t
		}
}
