# while `mlplatform serve` serves champion 1 (MLPLATFORM_DATA_DIR/MLPLATFORM_HOME set):
from mlplatform.resources import open_resources

client = open_resources("mlflow")["mlflow"].tracking().client()
client.delete_model_version("flight_delay", "1")  # = "Delete version" in the MLflow UI
# -> within 0.5 s: GET /health {"status":"no_champion"}, every POST /predict -> 503
