from django.urls import path

app_name = "coordinator"
urlpatterns: list = []
