import { DuckDBInstance } from '@duckdb/node-api';
const [csv, pq] = process.argv.slice(2);
const db = await DuckDBInstance.create(':memory:');
const con = await db.connect();
const cols = ['customer_id','tenure_months','monthly_charges','total_charges','num_support_calls','avg_session_minutes','last_login_days_ago','is_senior','num_dependents','data_usage_gb','dropped_calls','paperless_billing','num_devices','satisfaction_score','churned'];
// Values compared after printing both as the CSV text would (shortest decimal of the stored type).
const q = (src) => `SELECT ${cols.map(c => `sum(hash(${c}::VARCHAR)) AS ${c}`).join(', ')}, sum(hash(signup_date::VARCHAR)) AS d, sum(hash(plan::VARCHAR || region::VARCHAR || payment_method::VARCHAR || contract::VARCHAR)) AS cats FROM ${src}`;
const a = (await con.runAndReadAll(q(`read_csv('${csv}', all_varchar=false)`))).getRowObjects()[0];
const b = (await con.runAndReadAll(q(`read_parquet('${pq}')`))).getRowObjects()[0];
for (const k of Object.keys(a)) console.log(k.padEnd(22), a[k] === b[k] ? 'same' : `DIFF ${a[k]} ${b[k]}`);
